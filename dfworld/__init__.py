"""dfworld: a Delta-Forcing-trained autoregressive video world model behind a Gymnasium environment.

Importing dfworld registers its Gymnasium ids (`dfworld/EventWorld-v0`); heavy dependencies
(torchrl, ONNX Runtime, Hydra, the text encoder) are imported only where they are used.
"""

from dfworld.envs import register_envs

__version__ = "0.1.0"

register_envs()
