"""What a student tripped on, each now a clear message or a fix: one default network for `DDPM()` and the CLI, a
class-conditional diffusers UNet, a misspelled local folder, `evaluate` and a card written by hand, the betas on the
command line."""
import argparse

import pytest
import torch

from ddpm import DDPM, UNet2D, load_model
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


# ------------------------------------------------------------------ a class-conditional diffusers UNet

def _diffusers_unet(folder, **labels):
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=4, **labels).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("labels, shown", [(dict(num_class_embeds=10), "num_class_embeds 10"),
                                           (dict(class_embed_type="timestep"), "class_embed_type 'timestep'")])
def test_a_class_conditional_diffusers_unet_is_refused_by_name(tmp_path, labels, shown):
    with pytest.raises(ValueError, match=f"is a class-conditional UNet2DModel \\({shown}\\).*unconditional diffusers UNets only"):
        load_model(_diffusers_unet(tmp_path / "conditional", **labels))
    model = load_model(_diffusers_unet(tmp_path / "unconditional"))                 # the same UNet without labels loads
    assert model.num_classes is None and model.eps(torch.zeros(1, 1, 8, 8), 3).shape == (1, 1, 8, 8)
