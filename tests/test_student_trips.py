"""What a student tripped on, each now a clear message or a fix: one default network for `DDPM()` and the CLI, a
class-conditional diffusers UNet, a misspelled local folder, `evaluate` and a card written by hand, the betas on the
command line."""
import argparse

from ddpm import DDPM, UNet2D
from ddpm.tools.cli import _network, add_train_args
from ddpm.unet import CIFAR32, PATCH2, default_net


def _train_args(*argv):
    parser = argparse.ArgumentParser()
    add_train_args(parser)
    return parser.parse_args(list(argv))


# ------------------------------------------------------------------ one default network

def test_ddpm_without_a_net_builds_the_network_the_cli_trains():
    assert _network(_train_args(), 28) == default_net(28) == PATCH2 and _network(_train_args(), 32) == CIFAR32
    built = DDPM(num_classes=10).net.config
    assert built == UNet2D(num_classes=10, **PATCH2).config and built["patch_size"] == 2
    assert DDPM(net={}).net.config == UNet2D().config             # a dict is taken as given, as config.json holds it
