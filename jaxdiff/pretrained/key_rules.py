"""Name rules from torch state-dict keys to jaxdiff parameter paths, shared by the key maps.

A rule matches the module part of a torch name (everything before `.weight` / `.bias`) and gives
the jaxdiff module path and the layer's kind: "conv" and "linear" weights become `kernel` (with
the converter's OIHW -> HWIO or (out, in) -> (in, out) transform), "norm" weights become `scale`;
biases keep their name and values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

Rule = tuple[str, str]


def make_key_map(rules: Sequence[tuple[str, str, str]], what: str
                 ) -> Callable[[str], Rule | None]:
    """key_map(torch_name) -> (jaxdiff path with "/" separators, kind) for the first rule whose
    pattern matches the whole module part; raises KeyError for a name no rule knows.

    Args:
      rules: (regex on the dotted module name, replacement template, layer kind) triples.
      what: the model's name, for the error message.
    """
    compiled = [(re.compile(p), t, k) for p, t, k in rules]

    def key_map(torch_name: str) -> Rule | None:
        module, _, leaf = torch_name.rpartition(".")
        if leaf in ("weight", "bias"):
            for pattern, template, kind in compiled:
                match = pattern.fullmatch(module)
                if match:
                    path = match.expand(template).replace(".", "/")
                    if leaf == "bias":
                        return f"{path}/bias", "copy"
                    if kind == "norm":
                        return f"{path}/scale", "copy"
                    return f"{path}/kernel", kind
        raise KeyError(f"{torch_name!r} is not a parameter name of a diffusers {what}")

    return key_map
