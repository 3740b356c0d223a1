import pytest
import torch

from dicelab.errors import ConfigError
from dicelab.models import MLP, build_model, model_sites


def test_mlp_layer_names_and_shapes():
    m = MLP(64, (32, 16), 10, activation="tanh")
    names = [n for n, _ in m.named_children()]
    assert names == ["flatten", "fc1", "act1", "fc2", "act2", "head"]
    assert isinstance(m.act1, torch.nn.Tanh)
    assert m(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert model_sites(m) == {"activation": ["act1", "act2"], "dropout": ["act1", "act2"], "connect": ["fc1", "fc2"]}


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_vgg_for_one_and_three_channels(shape):
    m = build_model("vgg", shape, 10)
    out = m.eval()(torch.zeros(2, *shape))
    assert out.shape == (2, 10)
    names = dict(m.named_modules())
    for name in ("block1.conv1", "block1.bn1", "block2.conv2", "block3.pool", "fc1", "bn_fc", "head"):
        assert name in names
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert m.fc1.out_features == 128
    sites = model_sites(m)
    assert len(sites["dropout"]) == 4 and "head" not in sites["connect"]


def test_foreign_module_default_sites():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.GELU(),
                              torch.nn.Linear(8, 2))
    assert model_sites(net) == {"activation": ["1", "3"], "dropout": ["1", "3"], "connect": ["0", "2"]}


def test_model_errors_name_the_field():
    with pytest.raises(ConfigError, match="model.name"):
        build_model("resnet", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="model.depth"):
        build_model("mlp", (64,), 10, depth=3)
    with pytest.raises(ConfigError, match="image inputs"):
        build_model("vgg", (40,), 10)
