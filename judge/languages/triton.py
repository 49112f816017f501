"""Triton submissions: a Python ``solve`` that launches Triton kernels on torch tensors.

With ``--device cpu`` the worker sets ``TRITON_INTERPRET=1`` before importing the submission,
so the kernels run in Triton's interpreter.
"""

from judge.languages.base import PythonLanguage, module_available


class TritonLanguage(PythonLanguage):
    name = "triton"
    suffix = ".triton.py"
    runs_on_cpu = True
    extra = "triton"

    def missing_toolchain(self):
        if module_available("triton"):
            return None
        return "Triton is not installed: pip install -e '.[triton]'"
