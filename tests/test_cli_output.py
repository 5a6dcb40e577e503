# Output formatting: neutron-CLI-style tables, JSON and bare values; bad -f/-c choices.
from __future__ import annotations

import json

import pytest

from provnet.cli.output import OutputError, cell, format_many, format_one, table

SUBNET = {"id": "s1", "cidr": "172.16.1.0/24", "enable_dhcp": False, "gateway_ip": None,
          "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}],
          "dns_nameservers": ["8.8.8.8", "1.1.1.1"]}


def test_cells():
    assert cell(None) == ""
    assert cell(False) == "False"
    assert cell(["a", "b"]) == "a\nb"
    assert cell([{"start": "1", "end": "2"}]) == '{"start": "1", "end": "2"}'
    assert cell({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert cell({}) == ""


def test_show_table_is_field_value_sorted_with_multiline_cells():
    text = format_one(SUBNET)
    lines = text.splitlines()
    assert lines[0] == lines[2] == lines[-1]
    assert lines[0].startswith("+-") and lines[0].endswith("-+")
    assert lines[1].split("|")[1].strip() == "Field" and lines[1].split("|")[2].strip() == "Value"
    fields = [line.split("|")[1].strip() for line in lines[3:-1]]
    assert fields == ["allocation_pools", "cidr", "dns_nameservers", "", "enable_dhcp", "gateway_ip", "id"]
    assert '| {"start": "172.16.1.102", "end": "172.16.1.126"} |' in text
    assert len({len(line) for line in lines}) == 1  # a straight grid


def test_show_json_and_value_and_columns():
    assert json.loads(format_one(SUBNET, "json")) == SUBNET
    assert format_one(SUBNET, "value", ["cidr", "enable_dhcp"]) == "172.16.1.0/24\nFalse"
    assert json.loads(format_one(SUBNET, "json", ["id"])) == {"id": "s1"}


def test_list_formats():
    rows = [{"id": "a", "name": "n1", "x": 1}, {"id": "b", "name": "", "x": 2}]
    text = format_many(rows, ["id", "name"])
    assert text.splitlines()[1] == "| id | name |"
    assert "| b  |      |" in text
    assert format_many(rows, ["id", "name"], "value") == "a n1\nb "
    assert json.loads(format_many(rows, ["id", "x"], "json")) == [{"id": "a", "x": 1}, {"id": "b", "x": 2}]
    assert format_many([], ["id"]) == ""


def test_bad_choices():
    with pytest.raises(OutputError, match="no such column.*nope.*choose from"):
        format_one(SUBNET, "table", ["nope"])
    with pytest.raises(OutputError, match="unknown format 'xml'"):
        format_many([], ["id"], "xml")


def test_table_grid():
    assert table(["a"], [["x\ny"]]) == "+---+\n| a |\n+---+\n| x |\n| y |\n+---+"
