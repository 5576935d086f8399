"""diffrepro: reproduce, compare and explain diffusion-model training methods on one EDM core."""
__version__ = "0.1.0"
