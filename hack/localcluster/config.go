package localcluster

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Identities of the components. The controller manager and the scheduler use the users that
// the apiserver's bootstrap RBAC policy grants exactly what they need, so that a missing
// permission shows up here as it would in a real cluster.
const (
	adminUser             = "localcluster-admin"
	controllerManagerUser = "system:kube-controller-manager"
	schedulerUser         = "system:kube-scheduler"
	kwokUser              = "kwok"
	mastersGroup          = "system:masters"
	frontProxyClientName  = "front-proxy-client"

	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
)

// writeConfig generates the PKI and the components' configuration files, and the admin client.
func (c *Cluster) writeConfig(p ports) error {
	ca, err := newAuthority("localcluster-ca")
	if err != nil {
		return err
	}
	// A separate CA for the aggregation layer, as in kubeadm clusters: without request-header
	// authentication configured, the controller manager and the scheduler log errors about
	// its missing CA bundle over and over, and aggregated APIs (metrics) could not be added.
	frontProxyCA, err := newAuthority("localcluster-front-proxy-ca")
	if err != nil {
		return err
	}
	frontProxyClient, err := frontProxyCA.client(frontProxyClientName)
	if err != nil {
		return err
	}
	c.ca = ca.pem
	caKey, err := ca.keyPEM()
	if err != nil {
		return err
	}
	saKey, saPub, err := serviceAccountKeys()
	if err != nil {
		return err
	}
	pki := map[string][]byte{
		"ca.crt": ca.pem, "ca.key": caKey, "sa.key": saKey, "sa.pub": saPub,
		"front-proxy-ca.crt": frontProxyCA.pem, "front-proxy-client.crt": frontProxyClient.cert, "front-proxy-client.key": frontProxyClient.key,
	}
	servingCerts := map[string][]string{
		"apiserver":                       {"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		"kube-controller-manager-serving": nil,
		"kube-scheduler-serving":          nil,
	}
	// Clients inside the cluster's namespace reach the apiserver at its address there, and pods
	// at the kubernetes Service's first address.
	var ips []net.IP
	if c.node != nil {
		ips = []net.IP{c.node.ns.nsIP, kubernetesServiceIP}
	}
	for name, dnsNames := range servingCerts {
		kp, err := ca.serving(name, ips, dnsNames...)
		if err != nil {
			return err
		}
		pki[name+".crt"], pki[name+".key"] = kp.cert, kp.key
	}
	if c.node != nil {
		// The apiserver's identity towards the kubelet (kubectl logs, exec, port-forward): the
		// kubelet trusts this CA's client certificates and asks the apiserver, by
		// SubjectAccessReview, whether that user may; system:masters may.
		kp, err := ca.client("kube-apiserver-kubelet-client", "system:masters")
		if err != nil {
			return err
		}
		pki["apiserver-kubelet-client.crt"], pki["apiserver-kubelet-client.key"] = kp.cert, kp.key
	}
	if err := writeFiles(c.path("pki"), pki); err != nil {
		return err
	}

	clients := []struct {
		file, user string
		groups     []string
	}{
		{"kubeconfig", adminUser, []string{mastersGroup}},
		{"config/kube-controller-manager.kubeconfig", controllerManagerUser, nil},
		{"config/kube-scheduler.kubeconfig", schedulerUser, nil},
		{"config/kwok.kubeconfig", kwokUser, []string{mastersGroup}},
	}
	var admin keyPair
	for _, cl := range clients {
		kp, err := ca.client(cl.user, cl.groups...)
		if err != nil {
			return err
		}
		if cl.user == adminUser {
			admin = kp
		}
		if err := os.MkdirAll(c.path("config"), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(c.path(cl.file), kubeconfig(c.server, c.ca, cl.user, kp), 0o600); err != nil {
			return err
		}
	}
	c.kubeconfig = c.path("kubeconfig")
	if c.node != nil {
		if err := c.writeNodeConfig(ca); err != nil {
			return err
		}
	}

	scheduler := fmt.Appendf(nil, `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
enableProfiling: false
`, c.path("config", "kube-scheduler.kubeconfig"))
	if err := os.WriteFile(c.path("config", "kube-scheduler.yaml"), scheduler, 0o600); err != nil {
		return err
	}
	if len(c.auditPolicy) > 0 {
		if err := os.WriteFile(c.path("config", "audit-policy.yaml"), c.auditPolicy, 0o600); err != nil {
			return err
		}
	}

	c.restConfig = &rest.Config{
		Host: c.server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.ca,
			CertData: admin.cert,
			KeyData:  admin.key,
		},
		// Tests create objects in bursts; client-go's default 5 QPS would make them crawl.
		QPS:   200,
		Burst: 400,
	}
	c.client, err = kubernetes.NewForConfig(c.restConfig)
	return err
}

func (c *Cluster) etcdArgs(p ports) []string {
	client := "http://" + c.host + ":" + strconv.Itoa(p.etcdClient)
	peer := "http://127.0.0.1:" + strconv.Itoa(p.etcdPeer)
	return []string{
		"--name=localcluster",
		"--data-dir=" + c.path("etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=localcluster=" + peer,
		// The data is thrown away with the cluster; fsync only costs time.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
}

func (c *Cluster) apiserverArgs(p ports) []string {
	pki := func(name string) string { return c.path("pki", name) }
	args := []string{
		"--etcd-servers=http://" + c.host + ":" + strconv.Itoa(p.etcdClient),
		"--bind-address=" + c.host,
		"--secure-port=" + strconv.Itoa(p.apiserver),
		"--advertise-address=" + c.host,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cert-dir=" + c.path("pki"),
		"--tls-cert-file=" + pki("apiserver.crt"),
		"--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--requestheader-client-ca-file=" + pki("front-proxy-ca.crt"),
		"--requestheader-allowed-names=" + frontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + pki("front-proxy-client.crt"),
		"--proxy-client-key-file=" + pki("front-proxy-client.key"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + pki("sa.pub"),
		"--service-account-signing-key-file=" + pki("sa.key"),
		"--profiling=false",
		// Otherwise SIGTERM waits up to --request-timeout (60s) for open watches to end; this
		// way in-flight requests drain, newcomers get 429 Retry-After, and watches get 2s.
		"--shutdown-send-retry-after=true",
	}
	if c.node != nil {
		// Pods of the real node reach the apiserver through the kubernetes Service. The
		// apiserver reaches the kubelet (logs, exec) at the node's InternalIP: the namespace has
		// no resolver, so the default order, which tries the Hostname first, fails whenever the
		// host's resolver is unreachable from inside it.
		args = append(args, "--endpoint-reconciler-type=lease",
			"--kubelet-preferred-address-types=InternalIP,Hostname",
			"--kubelet-client-certificate="+pki("apiserver-kubelet-client.crt"),
			"--kubelet-client-key="+pki("apiserver-kubelet-client.key"))
	} else {
		// The endpoints of the kubernetes Service may not be loopback addresses, and nothing in
		// the cluster dials them.
		args = append(args, "--endpoint-reconciler-type=none")
	}
	if len(c.auditPolicy) > 0 {
		args = append(args,
			"--audit-policy-file="+c.path("config", "audit-policy.yaml"),
			"--audit-log-path="+c.AuditLog(),
			"--audit-log-format=json",
			// Blocking: an event is written before the response is sent, so the log is
			// complete up to any answer a test has seen. No rotation: tests read one file.
			"--audit-log-mode=blocking",
			"--audit-log-maxsize=0",
		)
	}
	return args
}

func (c *Cluster) controllerManagerArgs(p ports) []string {
	kubeconfig := c.path("config", "kube-controller-manager.kubeconfig")
	pki := func(name string) string { return c.path("pki", name) }
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=" + c.host,
		"--secure-port=" + strconv.Itoa(p.controllerManager),
		"--tls-cert-file=" + pki("kube-controller-manager-serving.crt"),
		"--tls-private-key-file=" + pki("kube-controller-manager-serving.key"),
		"--leader-elect=false",
		// Each controller runs as its own ServiceAccount, as in kubeadm clusters, so RBAC
		// denials of built-in controllers surface here too.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + pki("sa.key"),
		"--root-ca-file=" + pki("ca.crt"),
		"--cluster-signing-cert-file=" + pki("ca.crt"),
		"--cluster-signing-key-file=" + pki("ca.key"),
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		// Tests check coexistence with the HPA controller, which at its default of 15s would be
		// too slow to observe.
		"--horizontal-pod-autoscaler-sync-period=1s",
		"--profiling=false",
	}
}

func (c *Cluster) schedulerArgs(p ports) []string {
	kubeconfig := c.path("config", "kube-scheduler.kubeconfig")
	return []string{
		"--config=" + c.path("config", "kube-scheduler.yaml"),
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=" + c.host,
		"--secure-port=" + strconv.Itoa(p.scheduler),
		"--tls-cert-file=" + c.path("pki", "kube-scheduler-serving.crt"),
		"--tls-private-key-file=" + c.path("pki", "kube-scheduler-serving.key"),
	}
}

func (c *Cluster) kwokArgs() []string {
	args := []string{
		"--kubeconfig=" + c.path("config", "kwok.kubeconfig"),
		// Only its own nodes: the real node's kubelet reports for itself.
		"--manage-nodes-with-annotation-selector=" + kwokNodeAnnotation + "=fake",
		// kwok's default pod CIDR holds 254 addresses; tests run thousands of pods.
		"--cidr=" + podCIDR,
		// The heartbeat stage reports node status only every 10 to 20 minutes and relies on
		// lease renewals to keep the node Ready, but kwok (unlike kwokctl) defaults to no
		// leases; the node then turns NotReady after the controller manager's 50s grace.
		"--node-lease-duration-seconds=40",
		// Without --server-address kwok serves nothing, which is what we want.
	}
	for _, stage := range c.bin.kwokStages {
		args = append(args, "--config="+stage)
	}
	return args
}
