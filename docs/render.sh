#!/bin/sh
# Regenerate the diagrams of docs/design.md from their sources:
#   docs/diagrams/sequence.py -> sequence.dot, then every docs/diagrams/*.dot -> *.svg.
# Needs python3 and Graphviz; labels are measured in Arial, which fontconfig maps to Liberation Sans
# (same metrics), so install both: apt-get install graphviz fonts-liberation2.
# tests/test_design_doc.py re-renders every source and fails when a committed SVG is out of date.
set -eu
cd "$(dirname "$0")/diagrams"
python3 sequence.py > sequence.dot
for src in *.dot; do
  dot -Tsvg "$src" -o "${src%.dot}.svg"
done
