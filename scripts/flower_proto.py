#!/usr/bin/env python3
"""Rebuilds Flower's `transport.proto` from the descriptors inside the `flwr` wheel.

The wheel ships only the generated `*_pb2.py` modules. Each one carries its file's
`FileDescriptorProto`, which says everything the `.proto` said (messages, fields with their
numbers and labels, oneofs, enums, services). This script prints that descriptor back as proto3
text, so Tern's Swift code can be generated from the same definition the Python client speaks.

    python scripts/flower_proto.py > Protos/flwr/proto/transport.proto

Run it with the Python that has `flwr==1.42.0` (make's `flwr-venv`). `--check` also compiles the
printed text with protoc and compares the result with the wheel's descriptor field by field.
"""
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto
SCALAR_NAMES = {
    F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float", F.TYPE_INT64: "int64", F.TYPE_UINT64: "uint64",
    F.TYPE_INT32: "int32", F.TYPE_FIXED64: "fixed64", F.TYPE_FIXED32: "fixed32", F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string", F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32", F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64", F.TYPE_SINT32: "sint32", F.TYPE_SINT64: "sint64",
}


def type_name(field, package):
    if field.type in (F.TYPE_MESSAGE, F.TYPE_ENUM):
        name = field.type_name.lstrip(".")
        prefix = package + "."
        return name[len(prefix):] if name.startswith(prefix) else name
    return SCALAR_NAMES[field.type]


def map_entry(message, field):
    """The nested MapEntry message a `map<K, V>` field stands for, or None."""
    if field.label != F.LABEL_REPEATED or field.type != F.TYPE_MESSAGE:
        return None
    short = field.type_name.rsplit(".", 1)[-1]
    for nested in message.nested_type:
        if nested.name == short and nested.options.map_entry:
            return nested
    return None


def print_enum(enum, indent, out):
    out.append(f"{indent}enum {enum.name} {{")
    for value in enum.value:
        out.append(f"{indent}  {value.name} = {value.number};")
    out.append(f"{indent}}}")


def print_field(message, field, package, indent, out):
    entry = map_entry(message, field)
    if entry is not None:
        key, value = entry.field[0], entry.field[1]
        kind = f"map<{type_name(key, package)}, {type_name(value, package)}>"
        out.append(f"{indent}{kind} {field.name} = {field.number};")
        return
    label = "repeated " if field.label == F.LABEL_REPEATED else ""
    if field.proto3_optional:
        label = "optional "
    out.append(f"{indent}{label}{type_name(field, package)} {field.name} = {field.number};")


def print_message(message, package, indent, out):
    out.append(f"{indent}message {message.name} {{")
    inner = indent + "  "
    for enum in message.enum_type:
        print_enum(enum, inner, out)
    for nested in message.nested_type:
        if not nested.options.map_entry:
            print_message(nested, package, inner, out)
    real_oneofs = {}
    for field in message.field:
        if field.HasField("oneof_index") and not field.proto3_optional:
            real_oneofs.setdefault(field.oneof_index, []).append(field)
    printed = set()
    for field in message.field:
        if field.HasField("oneof_index") and not field.proto3_optional:
            index = field.oneof_index
            if index in printed:
                continue
            printed.add(index)
            out.append(f"{inner}oneof {message.oneof_decl[index].name} {{")
            for member in real_oneofs[index]:
                print_field(message, member, package, inner + "  ", out)
            out.append(f"{inner}}}")
        else:
            print_field(message, field, package, inner, out)
    out.append(f"{indent}}}")


def render(fd):
    out = [
        f"// {fd.name}: printed by scripts/flower_proto.py from the descriptor in the flwr==1.42.0 wheel.",
        f'syntax = "{fd.syntax or "proto2"}";',
        "",
        f"package {fd.package};",
        "",
    ]
    for dep in fd.dependency:
        out.append(f'import "{dep}";')
    if fd.dependency:
        out.append("")
    for service in fd.service:
        out.append(f"service {service.name} {{")
        for method in service.method:
            cin = "stream " if method.client_streaming else ""
            sout = "stream " if method.server_streaming else ""
            inp, outp = method.input_type.lstrip("."), method.output_type.lstrip(".")
            for full in (inp, outp):
                assert full.startswith(fd.package + "."), full
            inp, outp = inp[len(fd.package) + 1:], outp[len(fd.package) + 1:]
            out.append(f"  rpc {method.name}({cin}{inp}) returns ({sout}{outp}) {{}}")
        out.append("}")
        out.append("")
    for enum in fd.enum_type:
        print_enum(enum, "", out)
        out.append("")
    for message in fd.message_type:
        print_message(message, fd.package, "", out)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def descriptor():
    from flwr.proto import transport_pb2
    fd = descriptor_pb2.FileDescriptorProto()
    transport_pb2.DESCRIPTOR.CopyToProto(fd)
    return fd


def comparable(fd):
    """The descriptor without what the text cannot carry (source info, empty options)."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(fd)
    copy.ClearField("source_code_info")
    for service in copy.service:
        for method in service.method:
            method.ClearField("options")

    def strip(messages):
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")  # protoc fills it in; the wheel leaves it out
            strip(message.nested_type)

    strip(copy.message_type)
    return copy


def check(text, fd):
    with tempfile.TemporaryDirectory() as tmp:
        proto = Path(tmp) / fd.name
        proto.parent.mkdir(parents=True)
        proto.write_text(text)
        out = Path(tmp) / "set.pb"
        subprocess.run(["protoc", "-I", tmp, f"--descriptor_set_out={out}", fd.name], check=True)
        built = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    if comparable(built) != comparable(fd):
        sys.exit("the printed .proto does not compile back to the wheel's descriptor")
    print("the printed .proto compiles back to the wheel's descriptor", file=sys.stderr)


def main():
    fd = descriptor()
    text = render(fd)
    if "--check" in sys.argv:
        check(text, fd)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
