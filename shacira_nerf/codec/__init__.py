"""File codec of shacira-nerf: the ``.shac`` container and integer entropy coding.

Kept free of torch and nerfstudio (numpy, the standard library and ``constriction`` only) so that
compressed files can be inspected, verified and decoded in light-weight environments, and so
that the exact bytes on disk never depend on a deep-learning stack.
"""

from .coder import (
    CODER_NAME,
    MAX_PRECISION,
    IntegerTable,
    decode_symbols,
    empirical_table,
    encode_symbols,
    pack_table,
    quantize_pmf,
    table_bits,
    unpack_table,
)
from .container import (
    ARRAY_DTYPES,
    FORMAT_VERSION,
    MAGIC,
    ContainerError,
    container_layout,
    decode_container,
    describe_sections,
    encode_container,
    pack_array,
    read_container,
    read_file_bytes,
    require_kind,
    unpack_array,
    write_container,
)

__all__ = [
    "ARRAY_DTYPES",
    "CODER_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_PRECISION",
    "ContainerError",
    "IntegerTable",
    "container_layout",
    "decode_container",
    "decode_symbols",
    "describe_sections",
    "empirical_table",
    "encode_container",
    "encode_symbols",
    "pack_array",
    "pack_table",
    "quantize_pmf",
    "read_container",
    "read_file_bytes",
    "require_kind",
    "table_bits",
    "unpack_array",
    "unpack_table",
    "write_container",
]
