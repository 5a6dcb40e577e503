# DHCP codec: RFC 3442 example encodings, RFC 3396 long options, overload, preserved options, typed decode errors.
from __future__ import annotations

import ipaddress

import pytest
from dhcp_seed import MACS, raw, request

from provnet.dhcp import codec
from provnet.dhcp.codec import DhcpDecodeError


@pytest.mark.parametrize("dest, expected", [
    ("0.0.0.0/0", "00"),
    ("10.0.0.0/8", "080a"),
    ("10.17.0.0/16", "100a11"),
    ("10.229.0.128/25", "190ae50080"),
    ("169.254.169.254/32", "20a9fea9fe"),
])
def test_rfc3442_example_descriptors(dest, expected):
    value = codec.classless_routes([(dest, "10.0.0.1")])
    assert value.hex() == expected + "0a000001"
    assert codec.parse_classless_routes(value) == [(ipaddress.IPv4Network(dest), ipaddress.IPv4Address("10.0.0.1"))]


def test_host_bits_are_masked_off():
    assert codec.classless_routes([("10.229.0.129/25", "10.229.0.1")]) == \
        codec.classless_routes([("10.229.0.128/25", "10.229.0.1")])


def test_seed_routes_bytes_match_the_reference_kea_data():
    # the Kea 2.2 hex in the reference: 169.254.169.254/32 via 10.77.0.3, default via 10.77.0.1
    value = codec.classless_routes([("169.254.169.254/32", "10.77.0.3"), ("0.0.0.0/0", "10.77.0.1")])
    assert value.hex().upper() == "20A9FEA9FE0A4D0003000A4D0001"


def test_malformed_classless_routes_raise_the_typed_error():
    for bad in ("21", "20a9fea9fe0a", "1f0a000001" + "0a000001"):  # len 33, truncated, host bits set
        with pytest.raises(DhcpDecodeError):
            codec.parse_classless_routes(bytes.fromhex(bad))


def test_long_option_is_split_and_joined_again():
    routes = [(f"10.{i}.0.0/16", "172.16.1.1") for i in range(60)]  # 60 * 7 = 420 bytes
    value = codec.classless_routes(routes)
    assert len(value) == 420
    wire = codec.encode_option(121, value)
    assert wire[:2] == bytes((121, 255)) and wire[257:259] == bytes((121, 165))
    msg = request(codec.OFFER, MACS["vm1"], options={121: value})
    assert codec.decode(codec.encode(msg)).options[121] == value


def test_overload_moves_options_into_file_and_sname_and_decodes_back():
    big = {200 + i: bytes([i]) * 40 for i in range(9)}  # 9 * 42 bytes of options
    msg = request(codec.OFFER, MACS["vm1"], options=big)
    data = codec.encode(msg, max_size=576)
    assert len(data) <= 576 - 28
    back = codec.decode(data)
    assert back.options[codec.OVERLOAD] in (b"\x01", b"\x03")
    for code, value in big.items():
        assert back.options[code] == value
    assert back.file == b""


def test_client_id_prl_max_size_and_relay_info_are_kept():
    opts = {61: b"\x01" + codec.mac_bytes(MACS["vm1"]), 55: bytes((1, 3, 121, 249)), 57: codec.u16(1500),
            82: b"\x01\x04port\x02\x03abc"}
    msg = codec.decode(raw(codec.DISCOVER, MACS["vm1"], options=opts, giaddr="172.16.1.50"))
    for code, value in opts.items():
        assert msg.options[code] == value
    assert msg.parameter_request_list == bytes((1, 3, 121, 249))
    assert msg.max_message_size == 1500
    assert msg.mac == codec.mac_bytes(MACS["vm1"])
    assert msg.giaddr == codec.ip_bytes("172.16.1.50")


def test_small_max_message_size_is_raised_to_576():
    msg = codec.decode(raw(codec.DISCOVER, MACS["vm1"], options={57: codec.u16(100)}))
    assert msg.max_message_size == 576


GOOD = raw(codec.DISCOVER, MACS["vm1"])


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (GOOD[:239], "short"),
    (GOOD[:236] + b"\x00\x00\x00\x00" + GOOD[240:], "no magic cookie"),
    (b"\x03" + GOOD[1:], "bad op"),
    (GOOD[:2] + b"\x11" + GOOD[3:], "hlen > 16"),
    (GOOD[:240] + b"\x35\x05\x01", "option runs past the end"),
    (GOOD[:240] + b"\x35", "option without length"),
    (GOOD[:240] + b"\x34\x01\x07\xff", "bad overload value"),
    (GOOD[:240] + b"\x34\x01\x01", "overload without end"),
    (GOOD[:234] + b"\x35\x09" + GOOD[236:240] + b"\x34\x01\x01\xff", "truncated option in overloaded file"),
])
def test_malformed_input_raises_only_the_typed_error(data, why):
    with pytest.raises(DhcpDecodeError):
        codec.decode(data)


def test_non_bytes_input_is_a_decode_error():
    with pytest.raises(DhcpDecodeError):
        codec.decode("not bytes")  # type: ignore[arg-type]


def test_bad_option_values_raise_typed_errors_on_access():
    msg = codec.decode(GOOD[:240] + b"\x35\x02\x01\x01\x39\x01\x05\x32\x03\x01\x02\x03\xff")
    with pytest.raises(DhcpDecodeError):
        _ = msg.message_type
    with pytest.raises(DhcpDecodeError):
        _ = msg.max_message_size
    with pytest.raises(DhcpDecodeError):
        msg.ip_option(50)


def test_mac_parsing_rejects_junk():
    assert codec.mac_bytes("FA:16:3e:00:00:03") == bytes.fromhex("fa163e000003")
    for bad in ("fa:16:3e", "zz:16:3e:00:00:03", "fa163e000003"):
        with pytest.raises(ValueError):
            codec.mac_bytes(bad)
