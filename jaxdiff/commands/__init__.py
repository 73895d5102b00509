"""What the `jaxdiff` subcommands do, as functions (cli.py only parses arguments and calls these).

- `jaxdiff.commands.eval`: `evaluate_run` (sample quality + bits/dim of a trained run).
- `jaxdiff.commands.pictures`: `noise_strip_picture`, `load_image`, `trajectory_path`,
  `plot_run`.
"""
