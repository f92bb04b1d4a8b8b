// Command pubsub-emulator serves Google's in-memory fake Pub/Sub server
// (cloud.google.com/go/pubsub/v2/pstest) on a fixed address, so that local
// development and integration tests can run without Docker or the gcloud SDK.
//
// One port serves both protocols, like the gcloud emulator:
//   - plaintext gRPC (HTTP/2, h2c): Publisher, Subscriber (incl. StreamingPull),
//     SchemaService — pstest's implementation, StreamingPull wrapped (shim.go);
//   - HTTP/1.1 JSON REST (/v1/...): topic/subscription admin plus unary
//     publish/pull/acknowledge/modifyAckDeadline, translated to gRPC calls on
//     pstest (rest.go). Needed because the Rust google-cloud-pubsub 1.x
//     TopicAdmin/SubscriptionAdmin clients speak REST only.
//
// Like the gcloud emulator it starts empty: clients create topics and
// subscriptions through the admin API. Point clients at it with
// PUBSUB_EMULATOR_HOST=127.0.0.1:8085 (plaintext, no credentials). State lives
// in memory only and is lost on exit.
//
// Usage:
//
//	pubsub-emulator [-addr 127.0.0.1:8085] [-min-ack-deadline 10s] [-stream-fanout 32] [-stream-timeout 0] [-v]
//	pubsub-emulator -ping 127.0.0.1:8085   # exit 0 iff gRPC and REST both answer
//
// The listen address can also be given with $PUBSUB_EMULATOR_ADDR.
//
// Behaviour worth knowing (pstest from cloud.google.com/go/pubsub/v2 v2.8.0):
//   - Ack deadlines use the wall clock: a loop per subscription runs every
//     ~10 ms and makes messages whose deadline passed available again, so
//     redelivery after expiry, modifyAckDeadline (lease extension) and nack
//     (modifyAckDeadline 0) work without SetTimeNowFunc.
//   - For StreamingPull the deadline is the stream's stream_ack_deadline_seconds
//     (as in production), not the subscription's; unary Pull uses the
//     subscription's ack_deadline_seconds (0 = 10 s; 10..600 enforced here).
//   - pstest delivers ~100 msg/s per StreamingPull stream; each client stream
//     is backed by -stream-fanout pstest streams (default 32: ~3000 msg/s).
//   - Server-side flow control (max_outstanding_messages/bytes in
//     StreamingPullRequest) is ignored: a stream gets everything available.
//   - A client stream that stays open but is no longer read (e.g. a Rust
//     MessageStream after shutdown() that was not dropped) keeps receiving
//     messages; after their deadline they are redelivered, possibly to the
//     same stream again, so they can stay stuck until it is closed.
//     -stream-fanout 1 gives pure pstest behaviour (then usually a one-deadline delay).
//   - Exactly-once subscriptions are accepted; acks go through the unary
//     Acknowledge RPC and always succeed. Dead-letter policies work
//     (delivery_attempt is set only when a dead-letter policy exists).
//   - Snapshots are not implemented; schemas only over gRPC.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

const defaultAddr = "127.0.0.1:8085"

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("pubsub-emulator: ")

	addrDefault := defaultAddr
	if v := os.Getenv("PUBSUB_EMULATOR_ADDR"); v != "" {
		addrDefault = v
	}
	addr := flag.String("addr", addrDefault, "host:port to listen on (env PUBSUB_EMULATOR_ADDR)")
	minAck := flag.Duration("min-ack-deadline", 10*time.Second,
		"smallest ack_deadline_seconds accepted for subscriptions (production: 10s)")
	streamTimeout := flag.Duration("stream-timeout", 0,
		"close StreamingPull streams after this long, like production does after ~30m (0 = never)")
	fanout := flag.Int("stream-fanout", 32,
		"pstest streams behind each client StreamingPull (pstest alone delivers ~100 msg/s per stream); 1 = off")
	verbose := flag.Bool("v", false, "log every REST request")
	ping := flag.String("ping", "", "do not serve: check that gRPC and REST both answer at this host:port, then exit 0/1")
	flag.Parse()

	if *ping != "" {
		if err := pingServer(*ping); err != nil {
			fmt.Fprintf(os.Stderr, "pubsub-emulator: ping %s: %v\n", *ping, err)
			os.Exit(1)
		}
		fmt.Printf("pubsub-emulator: %s is serving\n", *ping)
		return
	}

	if err := serve(*addr, *minAck, *streamTimeout, *fanout, *verbose); err != nil {
		log.Fatalf("%v", err)
	}
}

// maxRequestBytes is the largest gRPC request the emulator accepts: above
// production's 10 MB publish limit (which it does not enforce), so nothing
// production takes is refused here.
const maxRequestBytes = 16 << 20

func serve(addr string, minAck, streamTimeout time.Duration, fanout int, verbose bool) error {
	if minAck < time.Second || minAck > 600*time.Second {
		return fmt.Errorf("-min-ack-deadline must be within 1s..600s, got %v", minAck)
	}
	// Listen first so that "port in use" is a clean error.
	root, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}

	// pstest listens on an ephemeral loopback port of its own (used by the REST
	// gateway below); clients are served by our gRPC server, which uses
	// pstest's implementation with StreamingPull wrapped (shim.go).
	ackReactor := ackDeadlineReactor{min: int32(minAck / time.Second)}
	srv, err := newPstest("127.0.0.1:0",
		pstest.ServerReactorOption{FuncName: "CreateSubscription", Reactor: ackReactor},
		pstest.ServerReactorOption{FuncName: "UpdateSubscription", Reactor: ackReactor},
	)
	if err != nil {
		root.Close()
		return err
	}
	if streamTimeout > 0 {
		srv.SetStreamTimeout(streamTimeout)
	}
	// Production takes messages and publish requests up to 10 MB; grpc-go's
	// default receive limit is 4 MiB, which made a 5 MB publish fail here
	// with RESOURCE_EXHAUSTED where production accepts it.
	gsrv := grpc.NewServer(grpc.MaxRecvMsgSize(maxRequestBytes))
	pb.RegisterPublisherServer(gsrv, &srv.GServer)
	pb.RegisterSubscriberServer(gsrv, &subscriberShim{GServer: &srv.GServer, fanout: fanout})
	pb.RegisterSchemaServiceServer(gsrv, &srv.GServer)

	// REST gateway -> pstest over a loopback gRPC connection.
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("loopback gRPC client: %w", err)
	}
	gw := &gateway{pub: pb.NewPublisherClient(conn), sub: pb.NewSubscriberClient(conn), verbose: verbose}
	httpSrv := &http.Server{Handler: gw, ReadHeaderTimeout: 30 * time.Second}

	grpcL := newChanListener(root.Addr())
	httpL := newChanListener(root.Addr())
	go func() {
		if err := gsrv.Serve(grpcL); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Printf("gRPC serve: %v", err)
		}
	}()
	go func() {
		if err := httpSrv.Serve(httpL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("HTTP serve: %v", err)
		}
	}()
	go demux(root, grpcL, httpL)

	// The line below is what users grep for; scripts/pubsub-emulator.sh polls -ping.
	log.Printf("listening on %s (gRPC + REST, plaintext; export PUBSUB_EMULATOR_HOST=%s)", root.Addr(), root.Addr())

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	sig := <-sigc
	log.Printf("received %v, shutting down", sig)
	signal.Stop(sigc)

	done := make(chan struct{})
	go func() {
		root.Close()
		_ = httpSrv.Close()
		_ = conn.Close()
		gsrv.Stop()     // closes client connections; open streams are cancelled
		_ = srv.Close() // stops pstest's own gRPC server and delivery loops
		close(done)
	}()
	select {
	case <-done:
		log.Printf("stopped")
	case <-time.After(5 * time.Second):
		log.Printf("shutdown took longer than 5s, exiting anyway")
	}
	return nil
}

// newPstest wraps pstest.NewServerWithAddress, which panics if it cannot
// listen, and turns that into an error.
func newPstest(addr string, opts ...pstest.ServerReactorOption) (srv *pstest.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot start pstest server: %v", r)
		}
	}()
	return pstest.NewServerWithAddress(addr, opts...), nil
}

// ackDeadlineReactor makes subscription ack deadlines behave like production:
// 0 (unset) means 10 s, otherwise min..600 s. (pstest's own minimum defaults
// to 0 and, if raised with SetMinAckDeadline, would reject the unset value 0.)
// It also rejects UpdateSubscription without update_mask, which would
// otherwise crash pstest with a nil dereference.
type ackDeadlineReactor struct{ min int32 }

func (r ackDeadlineReactor) check(secs *int32) error {
	if *secs == 0 {
		*secs = 10
	}
	if *secs < r.min || *secs > 600 {
		return status.Errorf(codes.InvalidArgument,
			"Invalid ack deadline given: %d. The ack deadline must be between %d and 600 seconds.", *secs, r.min)
	}
	return nil
}

func (r ackDeadlineReactor) React(req interface{}) (bool, interface{}, error) {
	switch x := req.(type) {
	case *pb.Subscription:
		return false, nil, r.check(&x.AckDeadlineSeconds)
	case *pb.UpdateSubscriptionRequest:
		if x.GetUpdateMask() == nil || len(x.GetUpdateMask().GetPaths()) == 0 {
			return false, nil, status.Error(codes.InvalidArgument, "update_mask is required")
		}
		if slices.Contains(x.UpdateMask.Paths, "ack_deadline_seconds") {
			return false, nil, r.check(&x.Subscription.AckDeadlineSeconds)
		}
	}
	return false, nil, nil
}

// pingServer makes a real gRPC call (ListTopics on a dummy project) and the
// same call over REST, so "ready" means both protocols really answer.
// Without WaitForReady a refused connection fails at once, so callers can poll.
func pingServer(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := pb.NewPublisherClient(conn).ListTopics(ctx,
		&pb.ListTopicsRequest{Project: "projects/emulator-ping"}); err != nil {
		return fmt.Errorf("gRPC: %w", err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/projects/emulator-ping/topics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("REST: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("REST: HTTP %d: %s", resp.StatusCode, body)
	}
	return nil
}
