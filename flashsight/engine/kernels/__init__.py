"""GPU kernels (Triton) for the hot spots of a step, each beside the PyTorch reference it must
match. `ops.pick_ops` chooses: the reference on a CPU (and wherever exactness matters more than
speed), Triton on a GPU."""
