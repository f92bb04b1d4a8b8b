package main

// StreamingPull front-end for pstest. It keeps pstest's semantics but works
// around two pstest (v2.8.0) problems that bite real clients:
//
//  1. Emulator-wide hang: pstest answers a client keepalive (a
//     StreamingPullRequest without ack ids; the Rust client sends one every
//     30 s, protocol_version 1) with a blocking channel send made while holding
//     the server-wide mutex. If that stream is flow-controlled because the
//     consumer is slow, every RPC on the emulator (publish, admin, acks)
//     blocks until the consumer reads again. Keepalives carry nothing pstest
//     needs (it never closes idle streams), so they are dropped here.
//
//  2. Throughput: pstest's delivery loop hands each stream about one message
//     per 10 ms tick (~100 msg/s per stream). Each client stream is therefore
//     served by `fanout` pstest streams whose responses are merged.
//
// Also: stream_ack_deadline_seconds 0 (client omitted the required field)
// would make pstest redeliver after ~10 ms; it is treated as 10 s.

import (
	"io"
	"sync"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

type subscriberShim struct {
	*pstest.GServer // everything else is pstest's own implementation
	fanout          int
}

func (s *subscriberShim) StreamingPull(client pb.Subscriber_StreamingPullServer) error {
	first, err := client.Recv()
	if err != nil {
		return err
	}
	if first.StreamAckDeadlineSeconds == 0 {
		first.StreamAckDeadlineSeconds = 10
	}

	n := max(s.fanout, 1)
	done := make(chan struct{}) // closed when the client side ends or any virtual stream ends
	var doneOnce sync.Once
	finish := func() { doneOnce.Do(func() { close(done) }) }

	var sendMu sync.Mutex // grpc streams do not allow concurrent SendMsg
	send := func(r *pb.StreamingPullResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return client.Send(r)
	}

	vs := make([]*virtualStream, n)
	for i := range vs {
		vs[i] = &virtualStream{ServerStream: client, reqs: make(chan *pb.StreamingPullRequest, 64), done: done, send: send}
		vs[i].reqs <- proto.Clone(first).(*pb.StreamingPullRequest)
	}

	// Forward client requests (acks / modacks) to pstest, dropping keepalives.
	var recvErr error
	go func() {
		defer finish()
		for {
			req, err := client.Recv()
			if err != nil {
				if err != io.EOF {
					recvErr = err
				}
				return
			}
			if len(req.AckIds) == 0 && len(req.ModifyDeadlineAckIds) == 0 {
				continue // keepalive (see 1. above)
			}
			targets := vs[:1] // acks/modacks apply to the whole subscription
			if req.StreamAckDeadlineSeconds > 0 {
				targets = vs // per-stream setting: tell every virtual stream
			}
			for _, v := range targets {
				select {
				case v.reqs <- req:
				case <-done:
					return
				}
			}
		}
	}()

	errc := make(chan error, n)
	for _, v := range vs {
		go func() {
			err := s.GServer.StreamingPull(v)
			finish()
			errc <- err
		}()
	}
	var firstErr error
	for range n {
		if err := <-errc; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = recvErr
	}
	return firstErr
}

// virtualStream is what one pstest StreamingPull sees: requests come from the
// forwarding goroutine, responses go (serialised) to the real client stream.
type virtualStream struct {
	grpc.ServerStream // Context(), headers: from the real stream
	reqs              chan *pb.StreamingPullRequest
	done              <-chan struct{}
	send              func(*pb.StreamingPullResponse) error
}

func (v *virtualStream) Send(r *pb.StreamingPullResponse) error { return v.send(r) }

func (v *virtualStream) Recv() (*pb.StreamingPullRequest, error) {
	select {
	case r := <-v.reqs:
		return r, nil
	case <-v.done:
		return nil, io.EOF
	}
}
