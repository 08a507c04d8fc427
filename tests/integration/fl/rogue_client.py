"""A client that speaks Flower's stream with grpcio directly and answers with malformed messages,
for the coordinator's robustness test: `--mode` picks the misbehaviour."""
import argparse

import grpc
from flwr.proto import transport_pb2 as pb
from flwr.proto import transport_pb2_grpc as rpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--mode", required=True)
    args = parser.parse_args()
    channel = grpc.insecure_channel(args.server)
    stub = rpc.FlowerServiceStub(channel)
    import queue
    outgoing = queue.Queue()

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    stream = stub.Join(requests())
    try:
        for message in stream:
            kind = message.WhichOneof("msg")
            reply = pb.ClientMessage()
            if kind == "reconnect_ins":
                break
            if kind == "get_properties_ins":
                reply.get_properties_res.status.code = pb.Code.OK
            elif kind == "get_parameters_ins":
                reply.get_parameters_res.status.code = pb.Code.OK
                reply.get_parameters_res.parameters.tensors.append(b"\x93NUMPY garbage")
            elif kind == "fit_ins":
                if args.mode == "garbage-npy":
                    reply.fit_res.status.code = pb.Code.OK
                    reply.fit_res.parameters.tensors.extend([b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 40, b""])
                    reply.fit_res.num_examples = 10
                elif args.mode == "huge-examples":
                    reply.fit_res.status.code = pb.Code.OK
                    reply.fit_res.parameters.CopyFrom(message.fit_ins.parameters)
                    reply.fit_res.num_examples = 2**62
                elif args.mode == "wrong-kind":
                    reply.evaluate_res.status.code = pb.Code.OK
                    reply.evaluate_res.loss = float("nan")
                elif args.mode == "empty":
                    pass  # a ClientMessage with nothing set
                elif args.mode == "huge-shape":
                    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 9223372036854775807), }"
                    reply.fit_res.status.code = pb.Code.OK
                    reply.fit_res.parameters.tensors.append(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
                    reply.fit_res.num_examples = 1
            elif kind == "evaluate_ins":
                reply.evaluate_res.status.code = pb.Code.OK
                reply.evaluate_res.loss = float("inf")
                reply.evaluate_res.num_examples = -5
            outgoing.put(reply)
    except grpc.RpcError:
        pass
    outgoing.put(None)


if __name__ == "__main__":
    main()
