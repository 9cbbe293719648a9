"""Reports on the record: tables for ``runs`` and ``show``, the Markdown users publish and
the JSON document of a run. Pure: store records in, renderables, strings and dicts out."""
