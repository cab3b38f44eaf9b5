#!/usr/bin/env bash
# A device call brings back at most 8 files from $OUT: when it holds more, pack them all into one
# archive ($OUT/out.tgz, unpack with `tar xzf`), so a multi-tree call loses none of its figures.
OUT=${OUT:-/tmp/out}
if [ "$(find "$OUT" -type f | wc -l)" -gt 8 ]; then
  (cd "$OUT" && tar czf /tmp/pack_out.tgz . && rm -rf "${OUT:?}"/* && mv /tmp/pack_out.tgz "$OUT/out.tgz") \
    && echo "(the $OUT files are in out.tgz)"
fi
