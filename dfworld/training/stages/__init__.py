"""The stages of the chain, one per file: codec, decoder (a fast one for the codec), teacher, causal, ode, dmd, stream, delta,
fidelity.

Each file holds its config dataclass (`dfworld train stage=<name>`, configs/stage/<name>.yaml)
and its `Stage` for `dfworld.training.loop.Loop`. The distillation stages share
`dfworld.training.stages.base.DistillStage` (the frozen teacher, codec and text cache);
dmd, stream and delta share `SelfForcingStage` (critic and replay buffer, in dmd.py); delta is
the stream stage with another generator loss.
"""

from __future__ import annotations

import importlib

# stage -> (module, config class, stage class); modules load on use (torchrl, diffusers)
STAGES = {
    "codec": ("dfworld.training.stages.codec", "CodecStageConfig", "CodecStage"),
    "decoder": ("dfworld.training.stages.decoder", "DecoderStageConfig", "DecoderStage"),
    "teacher": ("dfworld.training.stages.teacher", "TeacherStageConfig", "TeacherStage"),
    "causal": ("dfworld.training.stages.causal", "CausalStageConfig", "CausalStage"),
    "ode": ("dfworld.training.stages.ode", "OdeStageConfig", "OdeStage"),
    "dmd": ("dfworld.training.stages.dmd", "DmdStageConfig", "DmdStage"),
    "stream": ("dfworld.training.stages.stream", "StreamStageConfig", "StreamStage"),
    "delta": ("dfworld.training.stages.delta", "DeltaStageConfig", "DeltaStage"),
    "fidelity": ("dfworld.training.stages.fidelity", "FidelityStageConfig", "FidelityStage"),
}


def stage_classes(name: str) -> tuple[type, type]:
    """(config dataclass, Stage class) of a stage by name."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    module, config_cls, stage_cls = STAGES[name]
    mod = importlib.import_module(module)
    return getattr(mod, config_cls), getattr(mod, stage_cls)


def stage_config(name: str, overrides: list[str] | tuple[str, ...] = ()):
    """A stage's config: configs/stage/<name>.yaml with Hydra overrides, checked against its dataclass."""
    from dfworld.configuration import load_config

    return load_config(stage_classes(name)[0], f"stage/{name}", overrides)
