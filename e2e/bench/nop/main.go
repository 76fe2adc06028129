// Command nop is the do-nothing Envoy ext_proc server the e2e bench tool
// (e2e/bench) runs next to tokengate: every message is answered "continue"
// at once. It is its own binary so that, like tokengate, it runs in another
// process than the client and pays for its own gRPC work.
//
//	nop [-listen 127.0.0.1:0]
//
// Once it serves it prints "nop ready grpc=ADDR"; SIGINT or SIGTERM stop it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nop:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "ext_proc gRPC address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// Default options, as tokengate's but for its receive limit, which
	// changes nothing for messages under it.
	srv := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(srv, server{})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "nop ready grpc=%s\n", ln.Addr())
	select {
	case <-ctx.Done():
		srv.Stop()
		return nil
	case err := <-errc:
		return err
	}
}
