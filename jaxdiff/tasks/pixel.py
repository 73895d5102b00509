"""The pixel diffusion task: the UNet on images (the digits, CIFAR-10, ... presets)."""

from __future__ import annotations

from jaxdiff import training


class PixelDiffusion:
    """See `jaxdiff.tasks`; the functions are the trainer's own."""

    def __init__(self, config, workdir=None):
        self.config = config

    def check_data(self, info) -> None:
        from jaxdiff.trainer import _check_data_matches_model

        _check_data_matches_model(info, self.config)

    def init_train_state(self, config, key):
        return training.init_train_state(config, key)

    def make_train_step(self, graphdef, optimizer):
        return training.make_train_step(graphdef, training.schedule_from_config(self.config),
                                         optimizer, self.config)

    def host_batch(self, batch: dict) -> dict:
        from jaxdiff.trainer import _host_batch

        return _host_batch(batch)

    def sample_grid(self, graphdef, params, num: int):
        from jaxdiff.trainer import sample_grid

        return sample_grid(self.config, graphdef, params, num)

    def write_pictures(self, graphdef, params, workdir, metrics_log, step: int,
                       verbose: bool) -> None:
        import sys

        from jaxdiff.viz import save_png

        grid = self.sample_grid(graphdef, params, self.config.sampling.num_samples)
        save_png(grid, workdir / "samples.png")
        metrics_log.write_image(step, "samples", grid)
        if verbose:
            print(f"wrote {workdir / 'samples.png'}", file=sys.stderr)
