package main

// A minimal HTTP/1.1 JSON gateway for the Pub/Sub v1 REST API, forwarding to
// the pstest gRPC server. It covers what google-cloud-pubsub (Rust) TopicAdmin
// and SubscriptionAdmin call, plus the unary data plane (publish, pull,
// acknowledge, modifyAckDeadline) for curl / REST clients. Schemas and
// snapshots are not routed (pstest has no snapshots): 501 UNIMPLEMENTED.
//
// Mapping follows google/pubsub/v1/pubsub.proto http rules; errors use the
// Google JSON error format {"error":{"code":409,"message":..,"status":"ALREADY_EXISTS"}}.

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	codepb "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

type gateway struct {
	pub     pb.PublisherClient
	sub     pb.SubscriberClient
	verbose bool
}

// route handles one request; name is "projects/{p}/{kind}/{id}" (or
// "projects/{p}" for lists), body is the raw JSON request body.
func (g *gateway) route(ctx context.Context, r *http.Request, parts []string, verb string, body []byte) (proto.Message, error) {
	q := r.URL.Query()
	pageSize := func() int32 { n, _ := strconv.Atoi(q.Get("pageSize")); return int32(n) }
	m := r.Method
	if len(parts) < 3 || parts[0] != "projects" || parts[1] == "" {
		return nil, errUnrouted(r)
	}
	project := "projects/" + parts[1]
	kind := parts[2]
	name := ""
	if len(parts) >= 4 && parts[3] != "" {
		name = strings.Join(parts[:4], "/")
	}

	switch {
	// ---- topics ----
	case kind == "topics" && len(parts) == 3 && verb == "" && m == http.MethodGet:
		return g.pub.ListTopics(ctx, &pb.ListTopicsRequest{Project: project, PageSize: pageSize(), PageToken: q.Get("pageToken")})
	case kind == "topics" && len(parts) == 4 && verb == "":
		switch m {
		case http.MethodPut:
			t := &pb.Topic{}
			if err := decode(body, t); err != nil {
				return nil, err
			}
			t.Name = name
			return g.pub.CreateTopic(ctx, t)
		case http.MethodGet:
			return g.pub.GetTopic(ctx, &pb.GetTopicRequest{Topic: name})
		case http.MethodPatch:
			req := &pb.UpdateTopicRequest{}
			if err := decode(body, req); err != nil {
				return nil, err
			}
			if req.Topic == nil {
				req.Topic = &pb.Topic{}
			}
			req.Topic.Name = name
			return g.pub.UpdateTopic(ctx, req)
		case http.MethodDelete:
			return g.pub.DeleteTopic(ctx, &pb.DeleteTopicRequest{Topic: name})
		}
	case kind == "topics" && len(parts) == 4 && verb == "publish" && m == http.MethodPost:
		req := &pb.PublishRequest{}
		if err := decode(body, req); err != nil {
			return nil, err
		}
		req.Topic = name
		return g.pub.Publish(ctx, req)
	case kind == "topics" && len(parts) == 5 && parts[4] == "subscriptions" && verb == "" && m == http.MethodGet:
		return g.pub.ListTopicSubscriptions(ctx, &pb.ListTopicSubscriptionsRequest{Topic: name, PageSize: pageSize(), PageToken: q.Get("pageToken")})

	// ---- subscriptions ----
	case kind == "subscriptions" && len(parts) == 3 && verb == "" && m == http.MethodGet:
		return g.sub.ListSubscriptions(ctx, &pb.ListSubscriptionsRequest{Project: project, PageSize: pageSize(), PageToken: q.Get("pageToken")})
	case kind == "subscriptions" && len(parts) == 4 && verb == "":
		switch m {
		case http.MethodPut:
			s := &pb.Subscription{}
			if err := decode(body, s); err != nil {
				return nil, err
			}
			s.Name = name
			return g.sub.CreateSubscription(ctx, s)
		case http.MethodGet:
			return g.sub.GetSubscription(ctx, &pb.GetSubscriptionRequest{Subscription: name})
		case http.MethodPatch:
			req := &pb.UpdateSubscriptionRequest{}
			if err := decode(body, req); err != nil {
				return nil, err
			}
			if req.Subscription == nil {
				req.Subscription = &pb.Subscription{}
			}
			req.Subscription.Name = name
			return g.sub.UpdateSubscription(ctx, req)
		case http.MethodDelete:
			return g.sub.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Subscription: name})
		}
	case kind == "subscriptions" && len(parts) == 4 && m == http.MethodPost:
		switch verb {
		case "pull":
			req := &pb.PullRequest{}
			if err := decode(body, req); err != nil {
				return nil, err
			}
			req.Subscription = name
			return g.sub.Pull(ctx, req)
		case "acknowledge":
			req := &pb.AcknowledgeRequest{}
			if err := decode(body, req); err != nil {
				return nil, err
			}
			req.Subscription = name
			return g.sub.Acknowledge(ctx, req)
		case "modifyAckDeadline":
			req := &pb.ModifyAckDeadlineRequest{}
			if err := decode(body, req); err != nil {
				return nil, err
			}
			req.Subscription = name
			return g.sub.ModifyAckDeadline(ctx, req)
		case "modifyPushConfig":
			req := &pb.ModifyPushConfigRequest{}
			if err := decode(body, req); err != nil {
				return nil, err
			}
			req.Subscription = name
			return g.sub.ModifyPushConfig(ctx, req)
		case "seek":
			req := &pb.SeekRequest{}
			if err := decode(body, req); err != nil {
				return nil, err
			}
			req.Subscription = name
			return g.sub.Seek(ctx, req)
		case "detach":
			return g.pub.DetachSubscription(ctx, &pb.DetachSubscriptionRequest{Subscription: name})
		}
	}
	return nil, errUnrouted(r)
}

func errUnrouted(r *http.Request) error {
	return status.Errorf(codes.Unimplemented, "pubsub-emulator: no REST route for %s %s", r.Method, r.URL.Path)
}

func decode(body []byte, m proto.Message) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, m); err != nil {
		return status.Errorf(codes.InvalidArgument, "invalid JSON payload: %v", err)
	}
	return nil
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" && r.Method == http.MethodGet {
		// Same answer as the gcloud emulator; handy for curl health checks.
		_, _ = io.WriteString(w, "Ok\n")
		return
	}
	var resp proto.Message
	var err error
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		err = errUnrouted(r)
	} else {
		verb := ""
		if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
			rest, verb = rest[:i], rest[i+1:]
		}
		var body []byte
		body, err = io.ReadAll(io.LimitReader(r.Body, 32<<20))
		if err == nil {
			resp, err = g.route(r.Context(), r, strings.Split(rest, "/"), verb, body)
		}
	}
	if g.verbose || (err != nil && status.Code(err) != codes.AlreadyExists && status.Code(err) != codes.NotFound) {
		log.Printf("REST %s %s -> %v", r.Method, r.URL.Path, status.Code(err))
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if err != nil {
		writeError(w, err)
		return
	}
	// The Rust client asks for "$alt=json;enum-encoding=int"; honour it.
	// (Read from the raw query: a literal ';' makes url.Query() drop the pair.)
	rawQuery, _ := url.QueryUnescape(r.URL.RawQuery)
	enumInts := strings.Contains(rawQuery, "enum-encoding=int")
	out, merr := protojson.MarshalOptions{UseEnumNumbers: enumInts}.Marshal(resp)
	if merr != nil {
		writeError(w, status.Errorf(codes.Internal, "marshal response: %v", merr))
		return
	}
	_, _ = w.Write(out)
}

// httpStatus maps gRPC codes to HTTP status codes (google/rpc/code.proto).
var httpStatus = map[codes.Code]int{
	codes.OK: 200, codes.Canceled: 499, codes.Unknown: 500, codes.InvalidArgument: 400,
	codes.DeadlineExceeded: 504, codes.NotFound: 404, codes.AlreadyExists: 409,
	codes.PermissionDenied: 403, codes.ResourceExhausted: 429, codes.FailedPrecondition: 400,
	codes.Aborted: 409, codes.OutOfRange: 400, codes.Unimplemented: 501, codes.Internal: 500,
	codes.Unavailable: 503, codes.DataLoss: 500, codes.Unauthenticated: 401,
}

func writeError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code := httpStatus[st.Code()]
	if code == 0 {
		code = 500
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code":    code,
		"message": st.Message(),
		"status":  codepb.Code(st.Code()).String(), // e.g. "ALREADY_EXISTS"
	}})
}
