package bench

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// RoleCostRow is one render of the role (ansible/render.yml) for a number of Services.
type RoleCostRow struct {
	Services int
	Wall     time.Duration
	// Tasks are the slowest tasks with their time, from Ansible's junit callback.
	Tasks []TaskTime
}

// TaskTime is the time Ansible spent in one task.
type TaskTime struct {
	Name string
	Took time.Duration
}

// RoleCost renders the role for each count of Local Services (two nodes each, ten per edge
// address, as in WatcherCost) through ansible/render.yml and reads the time of every task
// from Ansible's junit callback (ansible-core ships no profile_tasks).
func RoleCost(ctx context.Context, root, dir string, counts []int) ([]RoleCostRow, error) {
	var rows []RoleCostRow
	for _, n := range counts {
		work := filepath.Join(dir, fmt.Sprintf("role-%d", n))
		if err := os.MkdirAll(filepath.Join(work, "junit"), 0o700); err != nil {
			return rows, err
		}
		vars, err := apply.MarshalVars(localServices(n))
		if err != nil {
			return rows, err
		}
		varsFile := filepath.Join(work, "vars.json")
		if err := os.WriteFile(varsFile, vars, 0o600); err != nil {
			return rows, err
		}
		start := time.Now()
		out, err := runOutEnv(ctx, []string{
			"ANSIBLE_CONFIG=" + filepath.Join(root, "ansible", "ansible.cfg"),
			"ANSIBLE_HOME=" + filepath.Join(work, "home"),
			"ANSIBLE_LOCAL_TEMP=" + filepath.Join(work, "tmp"),
			"ANSIBLE_CALLBACKS_ENABLED=kubeftp_result,junit",
			"JUNIT_OUTPUT_DIR=" + filepath.Join(work, "junit"),
			"KUBEFTP_RESULT_FILE=" + filepath.Join(work, "result.json"),
		}, "ansible-playbook", "-i", "localhost,", filepath.Join(root, "ansible", "render.yml"),
			"-e", "@"+varsFile, "-e", "haproxy_ftp_render_dest="+filepath.Join(work, "haproxy.cfg"),
			"-e", "haproxy_ftp_stats_socket="+filepath.Join(work, "stats.sock"))
		row := RoleCostRow{Services: n, Wall: time.Since(start)}
		if err != nil {
			return rows, fmt.Errorf("render.yml with %d services: %w: %s", n, err, lastLines(out, 5))
		}
		if row.Tasks, err = junitTimes(filepath.Join(work, "junit")); err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// localServices is n Local Services with two nodes each, ten per edge address.
func localServices(n int) desired.State {
	st := desired.State{Schema: desired.Schema,
		Nodes: []desired.Node{{Name: "node-a", Address: "10.251.0.1", ID: 1}, {Name: "node-b", Address: "10.251.0.2", ID: 2}}}
	for i := range n {
		k := i % 10
		off := 11000
		st.Services = append(st.Services, desired.Service{
			ID: fmt.Sprintf("ftp-%04d", i), Source: fmt.Sprintf("tenants/ftp-%04d", i), EdgeGroup: "all",
			BindAddress: fmt.Sprintf("10.209.%d.%d", i/10/250, 1+i/10%250), ControlPort: 2100 + k, ControlNodePort: 20000 + i,
			PassiveMin: 21100 + 20*k, PassiveMax: 21109 + 20*k, PassiveOffset: &off, PassiveNodePorts: []int{},
			TrafficPolicy: "Local", HealthCheckNodePort: 31000 + i,
			Timeouts: desired.Timeouts{Connect: "5s", Client: "1h", Server: "1h", Check: "2s"}, MaxConn: 100,
			NodeNames: []string{"node-a", "node-b"},
		})
	}
	st.Generation = st.Hash()
	return st
}

var taskArgs = regexp.MustCompile(`\s+[a-z_]+=`)

func junitTimes(dir string) ([]TaskTime, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.xml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("the junit callback wrote nothing into %s (%v)", dir, err)
	}
	var tasks []TaskTime
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var doc struct {
			Cases []struct {
				Name string  `xml:"name,attr"`
				Time float64 `xml:"time,attr"`
			} `xml:"testsuite>testcase"`
		}
		if err := xml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, c := range doc.Cases {
			name := c.Name
			// "[localhost] <play>: <role> : <task>" → the task
			if i := strings.LastIndex(name, " : "); i >= 0 {
				name = name[i+3:]
			}
			// the callback appends the task's arguments
			if loc := taskArgs.FindStringIndex(name); loc != nil {
				name = name[:loc[0]]
			}
			tasks = append(tasks, TaskTime{Name: name, Took: time.Duration(c.Time * float64(time.Second))})
		}
	}
	sort.SliceStable(tasks, func(i, j int) bool { return tasks[i].Took > tasks[j].Took })
	return tasks, nil
}

func roleCostMarkdown(b *strings.Builder, rows []RoleCostRow) {
	if len(rows) == 0 {
		return
	}
	b.WriteString("\nPlaybook cost by number of Services (the role through ansible/render.yml on the controller, no SSH; " +
		"task times from Ansible's junit callback — ansible-core has no profile_tasks):\n\n")
	b.WriteString("| Services | wall time | slowest tasks |\n| ---: | ---: | --- |\n")
	for _, r := range rows {
		var top []string
		for _, t := range r.Tasks[:min(3, len(r.Tasks))] {
			top = append(top, fmt.Sprintf("%s %.1f s", mdEscape(t.Name), t.Took.Seconds()))
		}
		fmt.Fprintf(b, "| %d | %.1f s | %s |\n", r.Services, r.Wall.Seconds(), strings.Join(top, "; "))
	}
}
