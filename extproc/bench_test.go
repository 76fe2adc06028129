package extproc

import (
	"context"
	"fmt"
	"google.golang.org/protobuf/proto"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tokengate/tokengate/extproc/policy"
	"github.com/tokengate/tokengate/internal/config"
	"github.com/tokengate/tokengate/limiter/memstore"
)

// nopServer is the do-nothing ext_proc server SPEC §9 measures against: it
// answers every message with "continue" and keeps no state.
type nopServer struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (nopServer) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if err := stream.Send(continueAny(req)); err != nil {
			return err
		}
	}
}

// serve starts a real gRPC server on loopback and returns a client to it.
func serve(b *testing.B, impl extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorClient {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(srv, impl)
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

// oneRequest plays the four messages of a buffered request, as Envoy does,
// waiting for each reply before sending the next.
func oneRequest(ctx context.Context, c extprocv3.ExternalProcessorClient, msgs []*extprocv3.ProcessingRequest) error {
	stream, err := c.Process(ctx)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
	return stream.CloseSend()
}

// BenchmarkServer measures SPEC §9 row 1: one counted buffered request (4
// messages, 1 KB prompt, no estimation) through the real gRPC server, next
// to a do-nothing server in the same run. serial/* is the per-request cost
// (ns/op); parallel/* shows throughput with the client in this process.
func BenchmarkServer(b *testing.B) {
	prompt := strings.Repeat("What time is it in Lisbon? ", 38) // ~1 KB
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + prompt + `"}]}`
	p := labPolicy()
	p.TokensPerMinute = 1 << 50
	servers := []struct {
		name string
		impl extprocv3.ExternalProcessorServer
	}{
		{"nop", nopServer{}},
		{"counted", New(Options{Policies: compiled(b, p), Store: memstore.New()})},
		{"four-limits", New(Options{Policies: fourLimits(b), Store: memstore.New()})},
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, s := range servers {
			b.Run(mode+"/"+s.name, func(b *testing.B) {
				c := serve(b, s.impl)
				ctx := context.Background()
				var n atomic.Int64
				msgs := func() []*extprocv3.ProcessingRequest {
					// Distinct keys, as real traffic has, so the limiter's
					// map is exercised rather than one hot entry.
					key := fmt.Sprintf("key-%d", n.Add(1)%1024)
					return fullRequest(key, "/v1/chat/completions", body, "200", chatUsage(260, 100))
				}
				b.ReportAllocs()
				b.ResetTimer()
				if mode == "serial" {
					for b.Loop() {
						if err := oneRequest(ctx, c, msgs()); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := oneRequest(ctx, c, msgs()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// fourLimits is a policy of four limits no run can spend: requests,
// input and output tokens a minute, and cost a day.
func fourLimits(b testing.TB) []*policy.Policy {
	c, err := config.Parse([]byte(`prices: {default: {input: 2.50, output: 10}}
policies:
- name: lab
  counter_key: {header: [api-key]}
  limits:
  - {unit: requests, max: 1000000000000, window: 1m}
  - {unit: tokens, kind: input, max: 1000000000000, window: 1m}
  - {unit: tokens, kind: output, max: 1000000000000, window: 1m}
  - {unit: cost, max: 1000000, period: daily}
`))
	if err != nil {
		b.Fatal(err)
	}
	return policy.MustCompileAll(c.Policies, c.Prices)
}

// marshalStream is a fakeStream whose replies are marshalled, as gRPC
// would send them, and dropped: Envoy's reading them is not tokengate's
// cost.
type marshalStream struct{ fakeStream }

func (m *marshalStream) Send(r *extprocv3.ProcessingResponse) error {
	if _, err := proto.Marshal(r); err != nil {
		return err
	}
	if r.GetImmediateResponse() != nil {
		m.in = nil
	}
	return nil
}

// BenchmarkDecision is one counted request's four messages through the
// processor and the marshalling of its replies, without gRPC's transport:
// a policy of one limit against one of four.
func BenchmarkDecision(b *testing.B) {
	prompt := strings.Repeat("What time is it in Lisbon? ", 38) // ~1 KB
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + prompt + `"}]}`
	one := labPolicy()
	one.TokensPerMinute = 1 << 50
	for _, tt := range []struct {
		name     string
		policies []*policy.Policy
	}{{"limits=1", compiled(b, one)}, {"limits=4", fourLimits(b)}} {
		b.Run(tt.name, func(b *testing.B) {
			srv := New(Options{Policies: tt.policies, Store: memstore.New()})
			msgs := make([][]*extprocv3.ProcessingRequest, 1024)
			for i := range msgs {
				msgs[i] = fullRequest(fmt.Sprintf("key-%d", i), "/v1/chat/completions", body, "200", chatUsage(260, 100))
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				fs := &marshalStream{fakeStream{ctx: context.Background(), in: msgs[i%len(msgs)]}}
				if err := srv.Process(fs); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkStream measures a streamed chat completion of 500 SSE chunks
// (each answered before the next is sent, as the harness does) through the
// real gRPC server, next to the do-nothing server; ns/message spreads the
// request over its 503 messages.
func BenchmarkStream(b *testing.B) {
	const chunks = 500
	var msgs []*extprocv3.ProcessingRequest
	msgs = append(msgs,
		reqHeaders(false, ":method", "POST", ":path", "/v1/chat/completions", "api-key", "k"),
		reqBody(streamBody),
		respHeaders("200", false, "content-type", "text/event-stream"))
	for i := range chunks {
		data := fmt.Sprintf("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word%d\"}}],\"usage\":null}\n\n", i)
		if i == chunks-1 {
			data += `data: {"choices":[],"usage":{"prompt_tokens":15,"completion_tokens":1000,"total_tokens":1015}}` + "\n\ndata: [DONE]\n\n"
		}
		msgs = append(msgs, chunk([]byte(data), i == chunks-1))
	}
	p := labPolicy()
	p.TokensPerMinute = 1 << 50
	for _, s := range []struct {
		name string
		impl extprocv3.ExternalProcessorServer
	}{
		{"nop", nopServer{}},
		{"counted", New(Options{Policies: compiled(b, p), Store: memstore.New()})},
		{"four-limits", New(Options{Policies: fourLimits(b), Store: memstore.New()})},
	} {
		b.Run(s.name, func(b *testing.B) {
			c := serve(b, s.impl)
			b.ReportAllocs()
			for b.Loop() {
				if err := oneRequest(context.Background(), c, msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(msgs)), "ns/message")
		})
	}
}
