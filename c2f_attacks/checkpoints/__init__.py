"""Checkpoints shipped inside the package, read by ``load_model`` by name.

``shapes-vgg16.pt``: C2F-VGG16 trained on the procedural shapes (``c2f-bench train`` regenerates
it). ``shapes-vgg16-at.pt``: the same model fine-tuned with adversarial training
(``c2f-bench train --init ... --adversarial fgsm_rs`` regenerates it; docs/usage.md gives
the command). Each file is a ``c2f-attacks/checkpoint`` dict
(architecture, config, hierarchy, weights) loaded with ``weights_only=True`` and validated,
NaN or infinite weights included.
"""
