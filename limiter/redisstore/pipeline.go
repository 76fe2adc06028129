package redisstore

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tokengate/tokengate/limiter"
)

// maxPipeline bounds the scripts one round trip carries.
const maxPipeline = 128

// pipeliner sends the scripts of concurrent calls together. While one
// pipeline is out, the calls that arrive wait and go in the next one, so
// under load a round trip carries many decisions for one write and one
// read on each side, and a call alone goes at once: nothing waits on a
// timer. (rueidis pipelines so on its own; go-redis needs this.)
//
// Not in a Cluster: go-redis's cluster client sends a pipeline again
// after a network error (its redirect loop), which the hooks that stop it
// for single calls (internal/server's clusterOnError) do not reach, and a
// settle sent twice is charged twice. There every call goes on its own.
type pipeliner struct {
	c       redis.UniversalClient
	cluster bool
	mu      sync.Mutex
	queue   []*scriptCall
	busy    bool // a sender is running
}

type scriptCall struct {
	script *redis.Script // decideScript when nil
	keys   []string
	args   []any
	res    []any
	err    error
	done   chan struct{}
}

func (c *scriptCall) run(ctx context.Context, rc redis.Scripter) {
	c.res, c.err = c.code().Run(ctx, rc, c.keys, c.args...).Slice()
}

func (c *scriptCall) code() *redis.Script {
	if c.script == nil {
		return decideScript
	}
	return c.script
}

func newPipeliner(c redis.UniversalClient) *pipeliner {
	_, cluster := c.(*redis.ClusterClient)
	return &pipeliner{c: c, cluster: cluster}
}

// run runs decideScript with keys and args and returns its reply. A call
// whose ctx has ended is not sent; one sent is waited for, as go-redis
// waits for a command it wrote (its read timeout bounds it): a reserve
// that ran is then known to have run, and its hold is settled rather
// than left to expire.
func (p *pipeliner) run(ctx context.Context, keys []string, args []any) ([]any, error) {
	c := &scriptCall{keys: keys, args: args}
	p.call(ctx, c)
	return c.res, c.err
}

// call queues c and waits for its reply. The queue is the order Redis
// runs the calls in (one pipeline at a time, each in queue order), which
// limiter.Ordered's f hears of as c takes its place; not in a Cluster,
// whose calls go each on its own, in no order.
func (p *pipeliner) call(ctx context.Context, c *scriptCall) {
	if c.err = ctx.Err(); c.err != nil {
		return
	}
	c.done = make(chan struct{})
	p.mu.Lock()
	p.queue = append(p.queue, c)
	if f := limiter.Ordered(ctx); f != nil && !p.cluster {
		f()
	}
	start := !p.busy
	p.busy = true
	p.mu.Unlock()
	if start {
		go p.send()
	}
	<-c.done
}

// send sends what is queued, a pipeline at a time, until nothing is.
func (p *pipeliner) send() {
	for {
		p.mu.Lock()
		batch := p.queue
		if len(batch) > maxPipeline {
			batch = batch[:maxPipeline:maxPipeline]
		}
		p.queue = p.queue[len(batch):]
		if len(batch) == 0 {
			p.busy, p.queue = false, nil
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		// The callers' contexts may differ and end apart: the round trip
		// is bounded by the client's own read and write timeouts instead.
		p.exec(context.Background(), batch)
	}
}

// exec sends batch, in one pipeline where it can, and closes each call's
// done with its reply.
func (p *pipeliner) exec(ctx context.Context, batch []*scriptCall) {
	if len(batch) == 1 || p.cluster {
		if len(batch) > 1 {
			var wg sync.WaitGroup
			for _, c := range batch {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.run(ctx, p.c)
					close(c.done)
				}()
			}
			wg.Wait()
			return
		}
		c := batch[0]
		c.run(ctx, p.c)
		close(c.done)
		return
	}
	pipe := p.c.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = c.code().EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, execErr := pipe.Exec(ctx)
	for i, c := range batch {
		cmd := cmds[i]
		c.res, c.err = cmd.Slice()
		switch {
		case c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT"):
			// A node without the script yet (restarted, failed over):
			// this one is sent again whole. It then runs after the calls
			// behind it in this pipeline that did run, out of the queue's
			// order (limiter.Ordered): once per script and node, right
			// after Redis lost its scripts, a check may miss a batch's
			// charges that its replica no longer counts as queued.
			c.run(ctx, p.c)
		case c.err == nil && c.res == nil:
			// Never answered: the pipeline failed before it.
			c.err = execErr
			if c.err == nil {
				c.err = errors.New("redis: no reply")
			}
		}
		close(c.done)
	}
}
