package main

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"time"
)

// freePort asks the kernel for a loopback port nobody uses. It is free
// when this returns; a race with another process taking it before the
// server binds it is possible but only makes the start fail, loudly.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startRedis runs a throwaway redis-server on a free loopback port, without
// persistence (no RDB snapshot, no AOF: disk writes would measure the disk)
// and returns it with its address once it answers PING.
func startRedis(bin string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	p, err := start("redis-server", bin, []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--loglevel", "warning",
	}, false)
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(readyTimeout)
	for {
		if err := ping(addr); err == nil {
			return p, addr, nil
		} else if e := p.alive(); e != nil {
			return nil, "", e
		} else if time.Now().After(deadline) {
			p.stop()
			return nil, "", fmt.Errorf("redis-server on %s not answering after %v: %v", addr, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
