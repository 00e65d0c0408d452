"""peftbench: which PEFT method for my model, GPU and task, measured."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that `import peftbench` stays cheap (the Hydra app validates before importing torch-heavy modules).
    if name == "PeftBenchCallback":
        from peftbench.callback import PeftBenchCallback

        return PeftBenchCallback
    raise AttributeError(name)


__all__ = ["PeftBenchCallback", "__version__"]
