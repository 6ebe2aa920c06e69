package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestReadyOnlyAfterStart(t *testing.T) {
	a := &app{hostname: "pod-1"}
	srv := httptest.NewServer(a.routes())
	defer srv.Close()

	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before the start delay: %d, want 503", code)
	}
	// The root answers while starting too: it shows who answers, not whether it is ready.
	if code, body := get(t, srv.URL+"/"); code != http.StatusOK || body != "testapp pod-1\n" {
		t.Errorf("GET /: %d %q, want 200 %q", code, body, "testapp pod-1\n")
	}
	a.ready.Store(true)
	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz once ready: %d, want 200", code)
	}
	if code, _ := get(t, srv.URL+"/other"); code != http.StatusNotFound {
		t.Errorf("GET /other: %d, want 404", code)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
