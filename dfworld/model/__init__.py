"""The world model: codec, conditioning, the video transformer and its KV cache."""
