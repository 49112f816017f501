"""PyTorch submissions: ``solve(**tensors_and_sizes)`` writes the output tensors in place."""

from judge.languages.base import PythonLanguage


class PyTorchLanguage(PythonLanguage):
    name = "pytorch"
    suffix = ".pytorch.py"
    runs_on_cpu = True
