package desired

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParsePassivePorts(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		lo, hi  int
		wantErr string
	}{
		{"range", "21100-21110", 21100, 21110, ""},
		{"single port", "21100", 21100, 21100, ""},
		{"largest allowed", "30000-31999", 30000, 31999, ""},
		{"too many", "30000-32000", 0, 0, "2001 ports, more than the limit of 2000"},
		{"reversed", "21110-21100", 0, 0, "first port is above the last"},
		{"zero", "0-10", 0, 0, "within 1-65535"},
		{"above 65535", "65535-65536", 0, 0, "within 1-65535"},
		{"spaces", "21100 - 21110", 0, 0, "want a port range"},
		{"sign", "+21100-21110", 0, 0, "want a port range"},
		{"comma list", "21100,21101", 0, 0, "want a port range"},
		{"empty", "", 0, 0, "want a port range"},
		{"six digits", "021100-21110", 0, 0, "want a port range"},
		{"trailing newline", "21100-21110\n", 0, 0, "want a port range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi, err := parsePassivePorts(tt.in)
			if diff := cmp.Diff([2]int{tt.lo, tt.hi}, [2]int{lo, hi}); diff != "" {
				t.Errorf("range (-want +got):\n%s", diff)
			}
			if gotErr := errText(err); !strings.Contains(gotErr, tt.wantErr) || (tt.wantErr == "") != (err == nil) {
				t.Errorf("error %q, want one containing %q", gotErr, tt.wantErr)
			}
		})
	}
}

func TestParseHAProxyTime(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"5s", "5s", ""},
		{"500ms", "500ms", ""},
		{"1500", "1500", ""},
		{"250us", "250us", ""},
		{"0005s", "5s", ""},
		{"24d", "24d", ""},
		{"2147483s", "2147483s", ""},
		{"2147484s", "", "about 24 days"},
		{"596h", "596h", ""},
		{"597h", "", "about 24 days"},
		{"25d", "", "about 24 days"},
		{"0", "", "greater than zero"},
		{"0us", "", "greater than zero"},
		{"5S", "", "HAProxy time"},
		{"5 s", "", "HAProxy time"},
		{"1234567890", "", "HAProxy time"},
		{"-1s", "", "HAProxy time"},
		{"5s\n", "", "HAProxy time"},
		{"", "", "HAProxy time"},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.in), func(t *testing.T) {
			got, err := parseHAProxyTime(tt.in)
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if gotErr := errText(err); !strings.Contains(gotErr, tt.wantErr) || (tt.wantErr == "") != (err == nil) {
				t.Errorf("error %q, want one containing %q", gotErr, tt.wantErr)
			}
		})
	}
}

func TestParseAnnotationsDefaults(t *testing.T) {
	got, warns := parseAnnotations(map[string]string{"other.io/x": "{{ y }}"})
	want := settings{timeouts: Timeouts{Connect: "5s", Client: "1h", Server: "1h", Check: "2s"}, maxConn: 2000}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(settings{})); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	if len(warns) != 0 {
		t.Errorf("warnings for a foreign annotation: %+v", warns)
	}
}

func TestValidateOptions(t *testing.T) {
	tests := []struct {
		name    string
		in      Options
		wantErr string
	}{
		{"zero value", Options{}, ""},
		{"everything set", Options{DefaultEdgeAddress: "2001:db8::1", DefaultEdgeGroup: "edge_eu", NodeAddressType: corev1.NodeExternalIP, ReservedPorts: []int{22, 8404, 10000}}, ""},
		{"bad edge address", Options{DefaultEdgeAddress: "10.0.0.300"}, "--default-edge-address"},
		{"wildcard edge address", Options{DefaultEdgeAddress: "::"}, "--default-edge-address"},
		{"bad edge group", Options{DefaultEdgeGroup: "edge-eu"}, "--default-edge-group"},
		{"hostname address type", Options{NodeAddressType: corev1.NodeHostName}, "--node-address-type"},
		{"bad reserved port", Options{ReservedPorts: []int{70000}}, "--reserved-ports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateOptions(tt.in)
			if gotErr := errText(err); !strings.Contains(gotErr, tt.wantErr) || (tt.wantErr == "") != (err == nil) {
				t.Errorf("error %q, want one containing %q", gotErr, tt.wantErr)
			}
		})
	}
}

func TestServerIDs(t *testing.T) {
	// These two names collide under FNV-1a folded into 1..2^31-1.
	const a, b = "node-160386", "node-416259"
	if wantNode(a, "").ID != wantNode(b, "").ID {
		t.Fatalf("test names no longer collide")
	}
	base := serverIDs([]string{"n1", "n2", "n3"})
	more := serverIDs([]string{"n3", "n9", "n1", "n2", "x"})
	for _, n := range []string{"n1", "n2", "n3"} {
		if base[n] != more[n] || base[n] != wantNode(n, "").ID {
			t.Errorf("id of %s moved: %d alone, %d with more nodes, formula %d", n, base[n], more[n], wantNode(n, "").ID)
		}
	}
	ids := serverIDs([]string{b, a, "n1"})
	if ids[a] != wantNode(a, "").ID || ids[b] != ids[a]+1 {
		t.Errorf("collision: got %s=%d %s=%d, want %s to keep %d and %s to probe to the next id", a, ids[a], b, ids[b], a, wantNode(a, "").ID, b)
	}
	if alone := serverIDs([]string{b}); alone[b] != wantNode(b, "").ID {
		t.Errorf("without its collider %s should get the plain id", b)
	}
}

func TestServiceIDs(t *testing.T) {
	long := strings.Repeat("n", 63)
	tests := []struct {
		ns, name, want string
	}{
		{"demo", "ftp", "demo-ftp"},
		{"a", "b-c", "a-b-c"},
		{"a-b", "c", "a-b-c-" + hex8("a-b/c")},
		{"team", long, ("team-" + long)[:54] + "-" + hex8("team/"+long)},
		{long, long, ("nnnnn" + long)[:54] + "-" + hex8(long+"/"+long)},
	}
	var cands []candidate
	for _, tt := range tests {
		cands = append(cands, candidate{svc: plainService(tt.ns, tt.name, 21, 30021, 21100, 1, 32100), key: tt.ns + "/" + tt.name})
	}
	ids := serviceIDs(cands)
	for i, tt := range tests {
		if ids[i] != tt.want {
			t.Errorf("%s/%s: got %q, want %q", tt.ns, tt.name, ids[i], tt.want)
		}
		if !isID(ids[i]) {
			t.Errorf("%s/%s: id %q breaks the contract", tt.ns, tt.name, ids[i])
		}
	}
	// A forced collision: the older (first) keeps the id, the younger gets a salted hash.
	dup := serviceIDs([]candidate{cands[0], cands[0]})
	if dup[0] != "demo-ftp" || dup[1] != "demo-ftp-"+hex8("demo/ftp#1") {
		t.Errorf("collision: got %q", dup)
	}
}

func TestStateValidateRejects(t *testing.T) {
	good, _ := Compute(Input{Nodes: threeNodes, Services: []*corev1.Service{chartService("demo", "ftp")}}, baseOpts)
	if err := good.Validate(); err != nil {
		t.Fatalf("good State rejected: %v", err)
	}
	tests := []struct {
		name    string
		mod     func(*Service)
		wantErr string
	}{
		{"id", func(s *Service) { s.ID = "Demo" }, "id"},
		{"source", func(s *Service) { s.Source = "demo" }, "source"},
		{"group", func(s *Service) { s.EdgeGroup = "a-b" }, "edge_group"},
		{"bind address not canonical", func(s *Service) { s.BindAddress = "2001:DB8::1" }, "bind_address"},
		{"port", func(s *Service) { s.ControlNodePort = 0 }, "control_node_port"},
		{"offset and list", func(s *Service) { s.PassiveNodePorts = []int{1} }, "passive_node_ports"},
		{"list length", func(s *Service) { s.PassiveOffset, s.PassiveNodePorts = nil, []int{1} }, "passive_node_ports"},
		{"policy", func(s *Service) { s.TrafficPolicy = "local" }, "traffic_policy"},
		{"timeout", func(s *Service) { s.Timeouts.Check = "2s\nx" }, "timeouts.check"},
		{"maxconn", func(s *Service) { s.MaxConn = 0 }, "maxconn"},
		{"send proxy", func(s *Service) { s.SendProxy = "v3" }, "send_proxy"},
		{"local without health check port", func(s *Service) { s.TrafficPolicy = TrafficPolicyLocal }, "health_check_node_port"},
		{"cluster service naming nodes", func(s *Service) { s.NodeNames = []string{} }, "node_names"},
		{"local service without node names", func(s *Service) { s.TrafficPolicy, s.HealthCheckNodePort = TrafficPolicyLocal, 32000 }, "node_names"},
		{"local service naming an unknown node", func(s *Service) {
			s.TrafficPolicy, s.HealthCheckNodePort, s.NodeNames = TrafficPolicyLocal, 32000, []string{"zz"}
		}, "node_names[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := good
			bad.Services = []Service{good.Services[0]}
			tt.mod(&bad.Services[0])
			if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
	nodeTests := []struct {
		name    string
		mod     func(*State)
		wantErr string
	}{
		{"node name", func(s *State) { s.Nodes = []Node{{Name: "{{x}}", Address: "10.0.0.1", ID: 1}} }, "name"},
		{"node order", func(s *State) { s.Nodes = []Node{s.Nodes[1], s.Nodes[0]} }, "sorted"},
		{"node id", func(s *State) { s.Nodes = []Node{{Name: "a", Address: "10.0.0.1", ID: 0}} }, "id 0"},
		{"nil nodes", func(s *State) { s.Nodes = nil }, "nodes"},
		{"node name label too long", func(s *State) { s.Nodes = []Node{{Name: strings.Repeat("a", 64), Address: "10.0.0.1", ID: 1}} }, "name"},
	}
	for _, tt := range nodeTests {
		t.Run(tt.name, func(t *testing.T) {
			bad := good
			bad.Nodes = append([]Node(nil), good.Nodes...)
			tt.mod(&bad)
			if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

// TestPure: the package stays a pure function of its input (DESIGN.md): no clients, no
// processes, no network, no clock.
func TestPure(t *testing.T) {
	forbidden := []string{"os", "os/exec", "net/http", "k8s.io/client-go", "time", "math/rand", "log", "log/slog"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestValidatorsMatchAPIMachinery(t *testing.T) {
	inputs := []string{"", "a", "-", "a-", "-a", "a-b", "a--b", "a.b", "a..b", ".a", "a.", "A", "0", "01", "a_b",
		"ftp", "ftp-command", "pasv-21100", "ftp-pasv-21100", "ftp-pasv-211001", "123", "1-2", "é", "a b", "a\n",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 127) + "a",
		strings.Repeat("a", 100) + "." + strings.Repeat("b", 100), "{{x}}"}
	for _, s := range inputs {
		compareValidators(t, s)
	}
}

func compareValidators(t *testing.T, s string) {
	t.Helper()
	if got, want := isDNSLabel(s), len(validation.IsDNS1123Label(s)) == 0; got != want {
		t.Errorf("isDNSLabel(%q) = %v, apimachinery says %v", s, got, want)
	}
	if got, want := isDNSSubdomain(s), len(validation.IsDNS1123Subdomain(s)) == 0; got != want {
		t.Errorf("isDNSSubdomain(%q) = %v, apimachinery says %v", s, got, want)
	}
	if got, want := isPortName(s), len(validation.IsValidPortName(s)) == 0; got != want {
		t.Errorf("isPortName(%q) = %v, apimachinery says %v", s, got, want)
	}
	if got, want := isID(s), regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`).MatchString(s); got != want {
		t.Errorf("isID(%q) = %v, contract regexp says %v", s, got, want)
	}
}

func TestIsPassiveName(t *testing.T) {
	re := regexp.MustCompile(`^(?:ftp-)?pasv-[0-9]+$`)
	for _, s := range []string{"pasv-21100", "ftp-pasv-1", "pasv-", "ftp-pasv-", "pasv21100", "ftp-pasv-1a", "xpasv-1", "ftp-ftp-pasv-1", "pasv-0", "PASV-1", ""} {
		if got, want := isPassiveName(s), re.MatchString(s); got != want {
			t.Errorf("isPassiveName(%q) = %v, want %v", s, got, want)
		}
	}
}
