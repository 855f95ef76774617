"""Running the protocol (core): training (train, train_step), evaluation, checkpoints, grids, devices."""
