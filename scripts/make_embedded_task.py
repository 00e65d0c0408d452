"""Regenerate peftbench/tasks/topics_{train,test}.jsonl, the embedded default's task (deterministic, seed 0).

Each item is a short sentence that mentions one noun; the answer is the noun's topic. Test nouns never appear in
training, so a gain on the test split is the model learning the task, not memorising sentences.
"""

import json
import random
from pathlib import Path

TOPICS = {
    "animal": "dog cat horse cow sheep goat rabbit tiger lion bear wolf fox deer zebra giraffe elephant monkey "
    "donkey camel kangaroo otter beaver squirrel hamster moose panda koala leopard cheetah hedgehog".split(),
    "food": "bread cheese apple banana soup pizza rice pasta salad cake cookie sandwich carrot potato tomato "
    "omelette pancake yogurt noodles burger muffin pie lemon mango grape steak waffle porridge biscuit".split(),
    "vehicle": "car bus truck bicycle train tram motorcycle van taxi scooter tractor ambulance helicopter "
    "airplane boat ferry yacht canoe subway jeep minivan limousine sailboat spaceship submarine wagon "
    "skateboard rickshaw snowmobile".split(),
    "instrument": "piano guitar violin drum flute trumpet cello harp clarinet saxophone trombone banjo "
    "ukulele accordion harmonica oboe tuba xylophone mandolin bagpipes organ tambourine cymbal bassoon "
    "harpsichord keyboard lute sitar marimba".split(),
}
FRAMES = [
    "I saw a {} near the old station this morning.",
    "My cousin keeps talking about the {} all the time.",
    "There was a {} in the picture on the wall.",
    "We read a short story about a {} at school.",
    "She pointed at the {} and smiled.",
    "The museum had a whole room about the {}.",
    "He wrote the word {} on the board.",
    "Nobody expected to find a {} there.",
    "The children drew a {} in their notebooks.",
    "Yesterday the neighbours talked about a {}.",
    "A {} was on the cover of the magazine.",
    "They asked me what I knew about the {}.",
]
PROMPT = "Sentence: {}\nTopic:"


def items(nouns_by_topic, frames, n, rng):
    out = []
    for _ in range(n):
        topic = rng.choice(sorted(nouns_by_topic))
        sentence = rng.choice(frames).format(rng.choice(nouns_by_topic[topic]))
        out.append({"sentence": sentence, "topic": topic, "choices": sorted(TOPICS)})
    return out


def main() -> None:
    rng = random.Random(0)
    train_nouns = {t: nouns[:20] for t, nouns in TOPICS.items()}
    test_nouns = {t: nouns[20:] for t, nouns in TOPICS.items()}
    folder = Path(__file__).resolve().parents[1] / "peftbench" / "tasks"
    for split, nouns, n in [("train", train_nouns, 1000), ("test", test_nouns, 300)]:
        rows = items(nouns, FRAMES, n, rng)
        (folder / f"topics_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(split, len(rows))


if __name__ == "__main__":
    main()
