// Command httpcheck is the HTTP health probe of the demo stack's images.
// They are distroless, with no shell, curl or wget, so a compose
// healthcheck needs a static binary of its own to run. It GETs one URL and
// exits 0 on a 2xx answer and 1 on anything else, usage errors included:
// Docker reads exit code 1 as unhealthy and reserves 2.
//
//	httpcheck [-timeout 2s] http://127.0.0.1:8080/healthz
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("httpcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: httpcheck [-timeout D] URL")
		return 1
	}
	url := fs.Arg(0)
	if err := check(url, *timeout); err != nil {
		fmt.Fprintf(stderr, "httpcheck: %v\n", err)
		return 1
	}
	return 0
}

func check(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No proxy: a probe checks this container, whatever HTTP_PROXY the
	// stack passes to its other clients.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
