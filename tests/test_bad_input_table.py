"""The bad-input table of docs/bad_input.md states only what a test checks (see tests/bad_input_table.py)."""

import bad_input_table
import pytest


@pytest.mark.parametrize("row", bad_input_table.ROWS, ids=lambda row: row[3].split("::")[1])
def test_each_row_is_checked_by_its_test(row):
    *_, node, asserted = row
    assert asserted in bad_input_table.test_source(node), f"{node} no longer checks {asserted!r}"


def test_page_table_is_the_generated_one():
    section = bad_input_table.page_section(bad_input_table.PAGE.read_text())
    assert section == bad_input_table.render(), (
        "docs/bad_input.md's bad-input table is stale: python tests/bad_input_table.py --write"
    )
