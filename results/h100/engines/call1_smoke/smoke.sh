#!/usr/bin/env bash
# smoke test for the engines bundle (not committed; the real script is scripts/engines_benchmark.sh)
set -uo pipefail
out=$1; mkdir -p $out
cd "$(dirname "$0")"
python3 -c 'import torch,transformers,peft,accelerate,sys;print(torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__, accelerate.__version__, sys.version)' 2>&1 | tee $out/env.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a $out/env.log
python3 -m pip list 2>/dev/null | grep -i -E "xformers|flash|torchao|pydantic|tyro|hf.transfer|diffusers|certifi|fsspec|triton" | tee -a $out/env.log
t=$SECONDS; python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site whl/*.whl > $out/install.log 2>&1; echo "install rc=$? $((SECONDS-t))s" | tee -a $out/env.log
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
t=$SECONDS; python3 -c 'import unsloth, trl, datasets, bitsandbytes; print("unsloth", unsloth.__version__, "trl", trl.__version__, "datasets", datasets.__version__, "bnb", bitsandbytes.__version__)' > $out/import.log 2>&1; echo "import unsloth rc=$? $((SECONDS-t))s" | tee -a $out/env.log; tail -30 $out/import.log
mk() { python3 - "$@" <<'PY'
import json, sys, time, torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
cfg_path, dest = sys.argv[1], sys.argv[2]
t = time.time()
config = AutoConfig.for_model(**json.load(open(cfg_path)))
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.save_pretrained(dest)
PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>")),
    unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<unk>").save_pretrained(dest)
print("wrote", dest, round(time.time() - t, 1), "s")
PY
}
t=$SECONDS; mk repo/peftbench/model_configs/tiny_llama.json /tmp/tiny > $out/mk_tiny.log 2>&1; echo "tiny ckpt rc=$? $((SECONDS-t))s" | tee -a $out/env.log
for m in lora qlora full; do
  t=$SECONDS; timeout 120 python3 repo/scripts/unsloth_direct.py --method $m --model /tmp/tiny --steps 6 --seq-len 256 --out $out/direct_tiny.csv > $out/direct_tiny_$m.log 2>&1; echo "direct tiny $m rc=$? $((SECONDS-t))s" | tee -a $out/env.log
done
tail -25 $out/direct_tiny_lora.log
cat $out/direct_tiny.csv
t=$SECONDS; mk repo/peftbench/model_configs/llama2_7b.json /tmp/l7 > $out/mk_7b.log 2>&1; echo "7b ckpt rc=$? $((SECONDS-t))s" | tee -a $out/env.log; du -sh /tmp/l7
t=$SECONDS; timeout 200 python3 repo/scripts/unsloth_direct.py --method lora --model /tmp/l7 --steps 8 --out $out/direct_7b.csv > $out/direct_7b_lora.log 2>&1; echo "direct 7b lora rc=$? $((SECONDS-t))s" | tee -a $out/env.log
tail -15 $out/direct_7b_lora.log
cat $out/direct_7b.csv
