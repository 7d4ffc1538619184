"""Shards and streaming them: the WebDataset tar format (``wds_format``), ``manifest.json``,
local and remote storage, the corpora ``shards write`` reads (``sources``) and the writer,
opening and inspecting shard sets, per-member decoding, and the Ray Data reader: a datasource
of shard pieces (``datasource``), the epoch layout (``partition``), resumable positions
(``position``), bad-sample accounting (``bad_data``)."""
