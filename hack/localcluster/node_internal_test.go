package localcluster

import (
	"encoding/binary"
	"net"
	"testing"
)

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/plain`:           "/tmp/plain",
		`/tmp/with\040space`:   "/tmp/with space",
		`/tmp/tab\011and\134b`: "/tmp/tab\tand\\b",
		`/tmp/trailing\04`:     `/tmp/trailing\04`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPickVethAddresses(t *testing.T) {
	_, pool, _ := net.ParseCIDR(vethPool)
	for range 100 {
		host, ns, err := pickVethAddresses()
		if err != nil {
			t.Fatal(err)
		}
		h, n := binary.BigEndian.Uint32(host.To4()), binary.BigEndian.Uint32(ns.To4())
		// The two usable addresses of one /30: .1 and .2 above a multiple of 4.
		if !pool.Contains(host) || !pool.Contains(ns) || h%4 != 1 || n != h+1 {
			t.Fatalf("host %s, namespace %s: want the two usable addresses of a /30 in %s", host, ns, vethPool)
		}
	}
}
