"""JAX submissions: ``solve`` takes the "in" tensors as jax arrays (shared with the judge's
torch tensors through DLPack, no copy) and the sizes, and RETURNS the output array, which the
adapter copies into the output tensor. The call waits for the result (``block_until_ready``),
so asynchronous dispatch cannot end a timed window early.

The worker sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX would otherwise reserve most of
the GPU's memory for itself) and, with ``--device cpu``, ``JAX_PLATFORMS=cpu``.
"""

from judge.languages.base import Language, import_solve, module_available


class JaxLanguage(Language):
    name = "jax"
    suffix = ".jax.py"
    runs_on_cpu = True
    extra = "jax"

    def expected_parameters(self, params):
        return [p.name for p in params if not p.is_output]

    def missing_toolchain(self):
        if module_available("jax"):
            return None
        return "JAX is not installed: pip install -e '.[jax]' (jax[cuda12] or jax[cuda13] on a GPU)"

    def load(self, artifact, params, device):
        import jax
        import jax.dlpack
        import torch

        solve = import_solve(artifact)
        inputs = [p for p in params if not p.is_output]
        outputs = [p for p in params if p.is_output]
        if len(outputs) != 1:
            raise TypeError("JAX submissions return one array; this challenge has several outputs")
        out_name = outputs[0].name

        def call(kwargs):
            args = {
                p.name: jax.dlpack.from_dlpack(kwargs[p.name]) if p.is_pointer else kwargs[p.name]
                for p in inputs
            }
            result = solve(*args.values())  # by position, as the C ABI passes them
            if not isinstance(result, jax.Array):
                raise TypeError(
                    f"solve returned {type(result).__name__}; return the output as a jax.Array"
                )
            result.block_until_ready()
            output = kwargs[out_name]
            if tuple(result.shape) != tuple(output.shape):
                raise ValueError(
                    f"solve returned shape {tuple(result.shape)}, expected {tuple(output.shape)}"
                )
            output.copy_(torch.from_dlpack(result))

        return call
