package main

import (
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// server is the do-nothing ext_proc server SPEC §9 measures tokengate
// against: it keeps no state and answers every message with the reply kind
// Envoy expects for it, status CONTINUE, so the gap to tokengate is what
// tokengate does, not what gRPC does.
type server struct {
	extprocv3.UnimplementedExternalProcessorServer
}

// The replies hold no per-request data, so one of each serves every stream
// and the nop spends nothing on building them.
var (
	replyRequestHeaders = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	replyRequestBody = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	replyResponseHeaders = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
		ResponseHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
	replyResponseBody = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
		ResponseBody: &extprocv3.BodyResponse{Response: &extprocv3.CommonResponse{}}}}
	replyRequestTrailers = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}}
	replyResponseTrailers = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
		ResponseTrailers: &extprocv3.TrailersResponse{}}}
)

// reply returns the "continue" answer for req, nil for a kind it does not
// know (a newer Envoy's message), which ends the stream.
func reply(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return replyRequestHeaders
	case *extprocv3.ProcessingRequest_RequestBody:
		return replyRequestBody
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return replyResponseHeaders
	case *extprocv3.ProcessingRequest_ResponseBody:
		return replyResponseBody
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return replyRequestTrailers
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return replyResponseTrailers
	}
	return nil
}

// Process answers each message of one HTTP request's stream until Envoy
// closes it; a closed or cancelled stream is the normal end, as in
// tokengate, so neither server pays for an error status the other skips.
func (server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		resp := reply(req)
		if resp == nil {
			return nil
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
