"""Spark schemas, derived from the catalogue's Arrow ones.

The catalogue (:mod:`lakehouse.catalogue`) declares each table once, in Arrow terms, so
the dashboard can use it without a JVM; Spark code asks here for the ``StructType`` of the
same table instead of declaring its own copy.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
from pyspark.sql import types as T

from lakehouse.catalogue import Table

_SCALARS: dict[pa.DataType, T.DataType] = {
    pa.string(): T.StringType(), pa.int64(): T.LongType(), pa.int32(): T.IntegerType(),
    pa.float64(): T.DoubleType(), pa.bool_(): T.BooleanType(), pa.binary(): T.BinaryType(),
    pa.date32(): T.DateType(), pa.timestamp("us", tz="UTC"): T.TimestampType(),
}


def spark_type(kind: pa.DataType) -> T.DataType:
    """The Spark type of an Arrow type the catalogue uses."""
    if kind in _SCALARS:
        return _SCALARS[kind]
    if pa.types.is_list(kind):
        return T.ArrayType(spark_type(kind.value_type), kind.value_field.nullable)
    if pa.types.is_map(kind):
        return T.MapType(spark_type(kind.key_type), spark_type(kind.item_type),
                         kind.item_field.nullable)
    if pa.types.is_struct(kind):
        return _struct(kind.field(i) for i in range(kind.num_fields))
    raise TypeError(f"arrow type: no Spark type for {kind}")


def _struct(fields: Iterable[pa.Field]) -> T.StructType:
    return T.StructType([T.StructField(f.name, spark_type(f.type), f.nullable)
                         for f in fields])


def spark_schema(table: Table | pa.Schema) -> T.StructType:
    """The Spark ``StructType`` of a catalogue table (or of an Arrow schema)."""
    return _struct(table.schema if isinstance(table, Table) else table)
