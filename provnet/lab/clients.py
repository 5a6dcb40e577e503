# The VMs' DHCP clients: command lines for udhcpc and dhclient, and the one script that applies a lease in a VM.
from __future__ import annotations

from pathlib import Path

# Called by udhcpc (`$1` = bound/renew/deconfig..., $ip $mask $router $staticroutes $msstaticroutes $serverid)
# and by dhclient ($reason = BOUND/RENEW/..., $new_ip_address $new_subnet_mask $new_routers
# $new_rfc3442_classless_static_routes $new_ms_classless_static_routes $new_dhcp_server_identifier).
# It does what cirros-dhcpc does for the seed: address, then the classless routes (121, else 249) and the
# router option only when neither came (RFC 3442), and writes what it applied to leases/<netns>.lease.
# It never touches /etc (no resolv.conf): the VM is a namespace on this host.
SCRIPT = r"""#!/bin/sh
LEASES=@LEASES@
ns=$(ip netns identify $$ 2>/dev/null)
[ -n "$ns" ] || ns=unknown
dev=${interface:-eth0}

# rfc3442 bytes "32 169 254 169 254 172 16 1 2 0 172 16 1 1" -> "169.254.169.254/32 172.16.1.2 0.0.0.0/0 172.16.1.1"
bytes_to_routes() {
    set -- $1
    out=""
    while [ $# -ge 5 ]; do
        len=$1; shift
        n=$(( (len + 7) / 8 ))
        d1=0; d2=0; d3=0; d4=0
        [ $n -ge 1 ] && { d1=$1; shift; }
        [ $n -ge 2 ] && { d2=$1; shift; }
        [ $n -ge 3 ] && { d3=$1; shift; }
        [ $n -ge 4 ] && { d4=$1; shift; }
        out="$out $d1.$d2.$d3.$d4/$len $1.$2.$3.$4"
        shift 4
    done
    echo $out
}

apply() {  # ip prefixlen routers classless server client
    ip -4 addr flush dev "$dev"
    ip link set dev "$dev" up
    ip -4 addr add "$1/$2" dev "$dev"
    if [ -n "$4" ]; then
        set -- $4
        while [ $# -ge 2 ]; do
            if [ "$2" = "0.0.0.0" ]; then
                ip route replace "$1" dev "$dev" scope link
            else
                ip route replace "$1" via "$2" dev "$dev"
            fi
            shift 2
        done
    else
        for r in $3; do ip route replace default via "$r" dev "$dev"; break; done
    fi
}

record() {  # ip prefixlen routers classless server client
    mkdir -p "$LEASES"
    {
        echo "ip=$1"; echo "prefixlen=$2"; echo "routers=$3"; echo "classless=$4"; echo "server=$5"
        echo "client=$6"; echo "time=$(date -u +%FT%TZ)"
    } > "$LEASES/$ns.lease.tmp" && mv "$LEASES/$ns.lease.tmp" "$LEASES/$ns.lease"
}

mask_to_len() {
    set -- $(echo "$1" | tr . ' ')
    len=0
    for o in "$@"; do
        case $o in 255) len=$((len+8));; 254) len=$((len+7));; 252) len=$((len+6));; 248) len=$((len+5));;
            240) len=$((len+4));; 224) len=$((len+3));; 192) len=$((len+2));; 128) len=$((len+1));; esac
    done
    echo $len
}

if [ -n "$reason" ]; then  # dhclient
    case "$reason" in
        PREINIT) ip link set dev "$dev" up ;;
        BOUND|RENEW|REBIND|REBOOT)
            routes=$new_rfc3442_classless_static_routes
            [ -n "$routes" ] || routes=$new_ms_classless_static_routes
            [ -n "$routes" ] && routes=$(bytes_to_routes "$routes")
            len=$(mask_to_len "$new_subnet_mask")
            apply "$new_ip_address" "$len" "$new_routers" "$routes"
            record "$new_ip_address" "$len" "$new_routers" "$routes" "$new_dhcp_server_identifier" dhclient ;;
        EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$dev"; rm -f "$LEASES/$ns.lease" ;;
    esac
else  # udhcpc
    case "$1" in
        deconfig) ip link set dev "$dev" up; ip -4 addr flush dev "$dev" ;;
        bound|renew)
            routes=$staticroutes
            [ -n "$routes" ] || routes=$msstaticroutes
            apply "$ip" "$mask" "$router" "$routes"
            record "$ip" "$mask" "$router" "$routes" "$serverid" udhcpc ;;
        leasefail|nak) : ;;
    esac
fi
exit 0
"""

DHCLIENT_CONF = """# dhclient for a provnet lab VM: ask for the classless static routes (121 and Microsoft's 249).
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
option ms-classless-static-routes code 249 = array of unsigned integer 8;
request subnet-mask, broadcast-address, routers, host-name, domain-name, interface-mtu,
        rfc3442-classless-static-routes, ms-classless-static-routes;
timeout 20;
retry 2;
"""


def write_client_files(lab_dir: Path) -> tuple[Path, Path]:
    """Write the lease script and dhclient.conf into the lab directory; returns their paths."""
    script = lab_dir / "dhcp-client-script"
    script.write_text(SCRIPT.replace("@LEASES@", str(lab_dir / "leases")))
    script.chmod(0o755)
    conf = lab_dir / "dhclient.conf"
    conf.write_text(DHCLIENT_CONF)
    return script, conf


def client_argv(client: str, lab_dir: Path, vm: str, interface: str = "eth0") -> list[str]:
    """The long-running DHCP client of one VM (foreground, so the lab owns its pid)."""
    script = str(lab_dir / "dhcp-client-script")
    if client == "udhcpc":
        return ["busybox", "udhcpc", "-f", "-i", interface, "-s", script, "-O", "staticroutes",
                "-O", "msstaticroutes", "-t", "10", "-T", "1", "-A", "2", "-x", f"hostname:{vm}"]
    if client == "dhclient":
        return ["dhclient", "-d", "-4", "-cf", str(lab_dir / "dhclient.conf"), "-sf", script,
                "-lf", str(lab_dir / "leases" / f"{vm}.dhclient.leases"),
                "-pf", str(lab_dir / "leases" / f"{vm}.dhclient.pid"), interface]
    raise ValueError(f"unknown DHCP client {client!r}: use udhcpc or dhclient")


def read_lease(path: Path) -> dict[str, str]:
    """A lease record written by the script: key=value lines (missing file: empty dict)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
