package main

// Serving gRPC and HTTP/1.1 REST on one port.
//
// google-cloud-pubsub (Rust, googleapis/google-cloud-rust) uses gRPC for
// Publisher/Subscriber but HTTP/1.1 + JSON for TopicAdmin/SubscriptionAdmin,
// and both use the same endpoint. So each accepted connection is sniffed: an
// HTTP/2 client preface ("PRI * HTTP/2.0...", what plaintext gRPC clients send)
// goes to the gRPC server, anything else to the REST gateway.

import (
	"bufio"
	"errors"
	"log"
	"net"
	"sync"
	"time"
)

// chanListener is a net.Listener fed by demux.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// hand passes c to the listener's Accept, or closes it if the listener is closed.
func (l *chanListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

// peekedConn replays the bytes buffered while sniffing.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// demux accepts connections on root until it is closed and routes each one to
// grpcL (HTTP/2 preface) or httpL (anything else).
func demux(root net.Listener, grpcL, httpL *chanListener) {
	for {
		c, err := root.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("accept: %v", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			head, err := br.Peek(3)
			_ = c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close() // connected and closed (e.g. a port probe) or too slow
				return
			}
			pc := &peekedConn{Conn: c, r: br}
			if string(head) == "PRI" {
				grpcL.hand(pc)
			} else {
				httpL.hand(pc)
			}
		}()
	}
}
