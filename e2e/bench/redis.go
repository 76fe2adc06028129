package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/tokengate/tokengate/internal/proc"
)

// startRedis runs a throwaway redis-server on a free loopback port, without
// persistence (no RDB snapshot, no AOF: disk writes would measure the disk)
// and returns it with its address once it answers PING.
func startRedis(ctx context.Context, bin string) (*proc.Process, string, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	opts := serverOptions()
	opts.Name = "redis-server"
	opts.Probe = func() error { return ping(addr) }
	p, err := proc.Start(ctx, bin, []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--loglevel", "warning",
	}, opts)
	if err != nil {
		return nil, "", err
	}
	return p, addr, nil
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}
