"""The run infrastructure: what a run is made of (stages), the training
program of either stage (training), config fields (config_utils), what the
commands share (app), user errors (errors), checkpoints, metrics, console
output, atomic files, the device mesh (parallel) and the input (data)."""
