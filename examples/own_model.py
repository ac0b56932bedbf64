"""Attack your own model with your own hierarchy: LRPC on a torchvision ResNet.

A flat classifier (here torchvision's ResNet-18 with one output per fine class) becomes a
coarse-to-fine classifier through a hierarchy: the coarse logit of a group is the logsumexp of
its members' logits (:class:`c2f_attacks.models.InducedC2F`). Normalization goes inside the
model, so images stay pixels in [0, 1]. Run: ``python examples/own_model.py``.

The same model from the command line: put a factory in an importable module, e.g.
``my_project/models.py`` with ``def resnet(): return <your trained ResNet>``, and the hierarchy in
a JSON file ``{"vehicle": ["car", "truck"], "animal": ["cat", "dog", "horse"]}`` (output ``i`` of
the ResNet is the i-th fine class, group by group, unless the module has ``class_names``)::

    c2f-bench run --model my_project.models:resnet --hierarchy hierarchy.json \\
        --dataset imagefolder:path/to/images --attacks lrpc -n 100

(``imagefolder:PATH`` has one folder per fine class; ``n`` images are sampled evenly across
classes.) In Python: ``load_model("my_project.models:resnet", hierarchy="hierarchy.json")``.
"""

import torch
import torchvision

from c2f_attacks import Hierarchy
from c2f_attacks.attacks import LRPC
from c2f_attacks.models import InducedC2F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main(steps: int = 20, size: int = 224, n: int = 4) -> None:
    hierarchy = Hierarchy.from_dict(
        {"vehicle": ["car", "truck"], "animal": ["cat", "dog", "horse"]}
    )
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=hierarchy.num_fine)
    # Your trained weights: resnet.load_state_dict(torch.load(path, weights_only=True))
    model = InducedC2F(resnet, hierarchy, mean=IMAGENET_MEAN, std=IMAGENET_STD).eval()

    x = torch.rand(n, 3, size, size)  # your images, pixels in [0, 1]
    attack = LRPC(model, eps=8 / 255, steps=steps, alpha=1 / 255, refresh=5)
    res = attack(x)
    for i in range(n):
        before, after = int(res.clean.coarse[i]), int(res.adv.coarse[i])
        print(f"image {i}: coarse {hierarchy.coarse_names[before]} -> "
              f"{hierarchy.coarse_names[after]} (fooled: {bool(res.success[i])})")  # fmt: skip
    print(f"fooling ratio {res.success.float().mean():.2f}, "
          f"{res.queries.float().mean():.0f} queries per image")  # fmt: skip


if __name__ == "__main__":
    main()
