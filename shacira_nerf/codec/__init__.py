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
    MAX_FILE_BYTES,
    MAX_HEADER_JSON,
    ContainerError,
    atomic_output,
    check_writable,
    container_layout,
    decode_container,
    describe_sections,
    encode_container,
    escape,
    naming,
    pack_array,
    read_container,
    read_file_bytes,
    unpack_array,
    write_bytes_atomic,
    write_container,
)

__all__ = [
    "ARRAY_DTYPES",
    "CODER_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_FILE_BYTES",
    "MAX_HEADER_JSON",
    "MAX_PRECISION",
    "ContainerError",
    "IntegerTable",
    "atomic_output",
    "check_writable",
    "container_layout",
    "decode_container",
    "decode_symbols",
    "describe_sections",
    "empirical_table",
    "encode_container",
    "encode_symbols",
    "escape",
    "naming",
    "pack_array",
    "pack_table",
    "quantize_pmf",
    "read_container",
    "read_file_bytes",
    "table_bits",
    "unpack_array",
    "unpack_table",
    "write_bytes_atomic",
    "write_container",
]
