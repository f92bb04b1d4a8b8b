// Command fake-s3 serves an in-memory, S3-compatible object store
// (github.com/johannesboyne/gofakes3 with its s3mem backend) on a fixed
// loopback address, so the archive's object-storage path can be tested
// against the real S3 REST protocol without Docker or a cloud account.
//
// It speaks path-style S3 over plain HTTP: create a bucket with
// `PUT /<bucket>`, then put, get, list (ListObjectsV2), delete and
// conditional puts (`If-None-Match: *`, which object_store uses for
// PutMode::Create) work as on S3. Request signatures are not checked, so
// any access key works. State lives in memory only and is lost on exit.
//
// Usage:
//
//	fake-s3 [-addr 127.0.0.1:9400] [-v]
//	fake-s3 -ping 127.0.0.1:9400   # exit 0 iff an S3 ListBuckets answers
//
// The listen address can also be given with $FAKE_S3_ADDR.
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
	"strings"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

const defaultAddr = "127.0.0.1:9400"

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("fake-s3: ")

	addrDefault := defaultAddr
	if v := os.Getenv("FAKE_S3_ADDR"); v != "" {
		addrDefault = v
	}
	addr := flag.String("addr", addrDefault, "host:port to listen on (loopback only)")
	ping := flag.String("ping", "", "check that an S3 server answers on host:port, then exit")
	verbose := flag.Bool("v", false, "log every request")
	flag.Parse()

	if *ping != "" {
		if err := pingServer(*ping); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := serve(*addr, *verbose); err != nil {
		log.Fatal(err)
	}
}

func serve(addr string, verbose bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad -addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr %q: refusing to listen on a non-loopback address", addr)
	}
	opts := []gofakes3.Option{}
	if verbose {
		opts = append(opts, gofakes3.WithGlobalLog())
	}
	faker := gofakes3.New(s3mem.New(), opts...)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Printf("serving S3 (in memory) on http://%s", ln.Addr())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Print("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// pingServer asks for the bucket list, as an S3 client's first call would.
func pingServer(addr string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ListAllMyBucketsResult") {
		return fmt.Errorf("%s answered %s, not an S3 bucket list", addr, resp.Status)
	}
	return nil
}
