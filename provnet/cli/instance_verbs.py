# The instance verbs (Nova's side of the metadata): instance-create/-list/-show/-update/-delete.
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import click

from provnet.cli.lookup import find, find_id
from provnet.cli.neutron_args import ArgError, merge_body, parse_property
from provnet.cli.verbs import (
    delete_all,
    emit_many,
    emit_one,
    list_filters,
    list_options,
    neutron_command,
    nothing_in,
    output_options,
    project_option,
    rows_for,
    update_one,
)
from provnet.model.forms import list_columns
from provnet.registry.base import Registry

INSTANCE_COLUMNS = list_columns("instance")  # as the attributes declare them (model/validation.py)
FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


def user_data_b64(path: Path) -> str:
    """The file's bytes, base64 as the API carries them (the 64 KiB limit is the model's rule)."""
    return base64.b64encode(path.read_bytes()).decode()


def key_pair(name: str | None, path: Path | None) -> dict[str, str] | None:
    """--key-name with --key-file: a public key (ssh, or x509 for a PEM certificate)."""
    if name is None and path is None:
        return None
    if name is None or path is None:
        raise ArgError("--key-name and --key-file go together")
    try:
        data = path.read_text().strip()
    except UnicodeDecodeError:
        raise ArgError(f"--key-file {path}: not a text public key") from None
    if "PRIVATE KEY" in data:
        raise ArgError(f"--key-file {path} is a private key; give the public key (e.g. {path}.pub)")
    if not data:
        raise ArgError(f"--key-file {path} is empty")
    kind = "x509" if data.startswith("-----BEGIN CERTIFICATE") else "ssh"
    return {"name": name, "type": kind, "data": data + ("\n" if kind == "x509" else "")}


def vendor_data(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArgError(f"--vendor-data {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArgError(f"--vendor-data {path}: expected a JSON object")
    return data


def properties(specs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        key, value = parse_property(spec)
        out[key] = value
    return out


def display(instance: dict[str, Any], fmt: str) -> dict[str, Any]:
    """In a table (and value, csv), user_data reads as the text it is (JSON and YAML keep the API's base64)."""
    if fmt in ("json", "yaml") or instance.get("user_data") is None:
        return instance
    raw = base64.b64decode(instance["user_data"])
    try:
        text = raw.decode().rstrip("\n")
    except UnicodeDecodeError:
        text = f"<{len(raw)} bytes, binary>"
    return {**instance, "user_data": text, "key_pairs": [k["name"] for k in instance.get("key_pairs", [])]}


def attach_ports(registry: Registry, instance_id: str, port_ids: list[str], zone: str) -> None:
    for port_id in port_ids:
        registry.update_port(port_id, {"device_id": instance_id, "device_owner": f"compute:{zone}"})


def register(group: click.Group) -> None:
    @neutron_command(group, "instance-create", "NAME", kind="instance",
                     epilog="\b\nExample:\n  provnet instance-create vm1 --user-data cloud-config.yaml \\\n"
                     "    --key-name mykey --key-file ~/.ssh/id_ed25519.pub --property role=web --port vm1-port")
    @click.option("--user-data", type=FILE, help="File handed to the VM as user-data (at most 64 KiB).")
    @click.option("--key-name", metavar="NAME", help="Key pair name (with --key-file).")
    @click.option("--key-file", type=FILE, help="Public key file of the key pair (ssh, or a PEM certificate).")
    @click.option("--property", "props", multiple=True, metavar="KEY=VALUE",
                  help="Metadata key/value (meta_data.json's `meta`); repeatable.")
    @click.option("--vendor-data", "vendor_data_file", type=FILE, help="JSON object file served as vendor_data.json.")
    @click.option("--availability-zone", metavar="AZ", help="Availability zone (default nova).")
    @click.option("--hostname", help="Hostname (default derived from NAME).")
    @click.option("--id", "uuid", metavar="UUID", help="Use this uuid instead of a new one.")
    @click.option("--port", "ports", multiple=True, metavar="PORT",
                  help="Port (name or id) to attach: its device_id becomes the instance's uuid. Repeatable.")
    @project_option
    @output_options
    def instance_create(app, args, extras, user_data, key_name, key_file, props, vendor_data_file,
                        availability_zone, hostname, uuid, ports, project_id, fmt, columns) -> None:
        """Create instance NAME: what the metadata service tells the VM.

        A VM is found by its port's fixed IP, and the port names its instance through device_id:
        give --port here, or port-create/port-update --device-id with the uuid shown.
        """
        registry: Registry = app.registry
        body: dict[str, Any] = {"name": args[0]}
        for key, value in (("hostname", hostname), ("availability_zone", availability_zone),
                           ("project_id", project_id), ("id", uuid)):
            if value is not None:
                body[key] = value
        if user_data is not None:
            body["user_data"] = user_data_b64(user_data)
        pair = key_pair(key_name, key_file)
        if pair:
            body["key_pairs"] = [pair]
        if props:
            body["metadata"] = properties(props)
        if vendor_data_file is not None:
            body["vendor_data"] = vendor_data(vendor_data_file)
        port_ids = [find_id(registry, "port", p) for p in ports]
        instance = registry.create_instance(merge_body(body, extras))
        try:
            attach_ports(registry, instance.id, port_ids, instance.availability_zone)
        except Exception:
            registry.delete_instance(instance.id)  # all or nothing
            raise
        emit_one(display(instance.to_api(), fmt), fmt, columns, "Created a new instance:")

    @neutron_command(group, "instance-list", "", kind="instance",
                     epilog="\b\nExample:\n  provnet instance-list --name vm1")
    @list_options
    def instance_list(app, args, extras, show_details, fmt, columns) -> None:
        """List instances; pass-through options are filters (`--name NAME`)."""
        rows, cols = rows_for(app.registry.list_instances(list_filters(extras) or None), INSTANCE_COLUMNS,
                              show_details)
        emit_many([display(r, fmt) for r in rows], cols, fmt, columns, nothing_in(app, "instances"))

    @neutron_command(group, "instance-show", "INSTANCE", kind="instance", extras=False,
                     epilog="\b\nExample:\n  provnet instance-show vm1 -f json")
    @output_options
    def instance_show(app, args, extras, fmt, columns) -> None:
        """Show an instance, by name or uuid (user_data as text in a table, base64 in JSON)."""
        emit_one(display(find(app.registry, "instance", args[0]).to_api(), fmt), fmt, columns)

    @neutron_command(group, "instance-update", "INSTANCE", kind="instance",
                     epilog="\b\nExample:\n  provnet instance-update vm1 --property role=db --delete-property old")
    @click.option("--name", help="New name.")
    @click.option("--hostname", help="New hostname.")
    @click.option("--user-data", type=FILE, help="Replace user-data with this file.")
    @click.option("--no-user-data", is_flag=True, help="Remove user-data.")
    @click.option("--property", "props", multiple=True, metavar="KEY=VALUE", help="Set a metadata key.")
    @click.option("--delete-property", "unset", multiple=True, metavar="KEY", help="Remove a metadata key.")
    @output_options
    def instance_update(app, args, extras, name, hostname, user_data, no_user_data, props, unset, fmt,
                        columns) -> None:
        """Update an instance (--property/--delete-property change single metadata keys)."""
        registry: Registry = app.registry
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if hostname is not None:
            body["hostname"] = hostname
        if user_data is not None and no_user_data:
            raise ArgError("give --user-data or --no-user-data, not both")
        if user_data is not None:
            body["user_data"] = user_data_b64(user_data)
        if no_user_data:
            body["user_data"] = None
        instance = find(registry, "instance", args[0])
        if props or unset:
            metadata = dict(instance.metadata)
            missing = [k for k in unset if k not in metadata]
            if missing:
                raise ArgError(f"no such property: {', '.join(missing)}")
            for key in unset:
                del metadata[key]
            metadata.update(properties(props))
            body["metadata"] = metadata
        updated = update_one(app, "instance", instance.id, body, extras)
        emit_one(display(updated.to_api(), fmt), fmt, columns, f"Updated instance: {args[0]}")

    @neutron_command(group, "instance-delete", "INSTANCE...", extras=False)
    def instance_delete(app, args, extras) -> None:
        """Delete instances, by name or uuid (their ports stay; clear or delete them separately)."""
        delete_all(app, "instance", args)
