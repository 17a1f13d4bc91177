// vcsim for the orchestrator's power tests: govmomi's vCenter simulator (a real implementation of
// the vSphere SOAP API) populated from a JSON estate description, serving until SIGTERM/SIGINT.
//
//	vcsim -estate estate.json [-listen 127.0.0.1:0] [-username U -password-env VAR]
//	      [-tls-cert cert.pem -tls-key key.pem]
//
// estate.json: {"hosts": ["esx1", ...], "datastores": ["ds1", ...],
//
//	"vms": [{"name": "emr-db1", "host": "esx1", "tools": true, "powered_on": true}, ...]}
//
// Optional, for the inventory import (orchestrator/onboarding): "host_addresses": {"esx1": "10.99.3.11"}
// (the hypervisor's management vmknic address); per VM "guest_id" (config.guestId, default
// otherGuest64), "guest_family" (what VMware Tools report in guest.guestFamily; default none), "ips"
// (guest.net / guest.ipAddress), "folder" ("Antwerp/Clinical": created under the VM folder) and
// "attributes" (custom attributes: {"role": "emr-db"}).
//
// The password is read from the environment variable named by -password-env, never from the
// command line. Once ready it prints one JSON line on stdout: {"url": ..., "vms": N, "hosts": N}.
// Built offline by scripts/build-vcsim.sh (Debian's golang-go and golang-github-vmware-govmomi-dev).
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type vmSpec struct {
	Name      string            `json:"name"`
	Host      string            `json:"host"`
	Datastore string            `json:"datastore"`
	Tools     bool              `json:"tools"`
	PoweredOn *bool             `json:"powered_on"`
	GuestID   string            `json:"guest_id"`
	Family    string            `json:"guest_family"`
	IPs       []string          `json:"ips"`
	Folder    string            `json:"folder"`
	Attrs     map[string]string `json:"attributes"`
}

type estate struct {
	Hosts      []string          `json:"hosts"`
	Datastores []string          `json:"datastores"`
	VMs        []vmSpec          `json:"vms"`
	HostAddrs  map[string]string `json:"host_addresses"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", args...)
	os.Exit(2)
}

func readEstate(path string) estate {
	var e estate
	data, err := os.ReadFile(path)
	if err != nil {
		fail("cannot read the estate: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		fail("%s: not a valid estate description: %v", path, err)
	}
	if len(e.Hosts) == 0 {
		fail("%s: at least one host is needed", path)
	}
	if len(e.Datastores) == 0 {
		e.Datastores = []string{"datastore1"}
	}
	return e
}

// rename sets an entity's name in the simulator's own registry (HostSystem has no Rename_Task there).
func rename(ref types.ManagedObjectReference, name string) {
	obj := simulator.Map.Get(ref)
	simulator.Map.WithLock(obj, func() {
		simulator.Map.Update(obj, []types.PropertyChange{{Name: "name", Val: name}})
	})
}

func setTools(ref types.ManagedObjectReference, running bool) {
	status := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
	tools := types.VirtualMachineToolsStatusToolsNotRunning
	if running {
		status = types.VirtualMachineToolsRunningStatusGuestToolsRunning
		tools = types.VirtualMachineToolsStatusToolsOk
	}
	obj := simulator.Map.Get(ref)
	simulator.Map.WithLock(obj, func() {
		simulator.Map.Update(obj, []types.PropertyChange{
			{Name: "guest.toolsRunningStatus", Val: string(status)},
			{Name: "guest.toolsStatus", Val: tools},
		})
	})
}

// setGuest sets what VMware Tools would report: the guest family and the guest's addresses.
func setGuest(ref types.ManagedObjectReference, family string, ips []string) {
	nics := []types.GuestNicInfo{}
	address := ""
	if len(ips) > 0 {
		nics = append(nics, types.GuestNicInfo{Network: "VM Network", IpAddress: ips, Connected: true,
			MacAddress: "00:50:56:00:00:01"})
		address = ips[0]
	}
	obj := simulator.Map.Get(ref)
	simulator.Map.WithLock(obj, func() {
		simulator.Map.Update(obj, []types.PropertyChange{
			{Name: "guest.guestFamily", Val: family},
			{Name: "guest.net", Val: nics},
			{Name: "guest.ipAddress", Val: address},
		})
	})
}

// setHostAddress sets a hypervisor's management vmknic address.
func setHostAddress(ref types.ManagedObjectReference, address string) {
	obj := simulator.Map.Get(ref)
	simulator.Map.WithLock(obj, func() {
		h := obj.(*simulator.HostSystem)
		h.Config.Network.Vnic[0].Spec.Ip.IpAddress = address
	})
}

// folderFor creates (once) the folder path under the VM folder and returns it.
func folderFor(ctx context.Context, root *object.Folder, path string, made map[string]*object.Folder) *object.Folder {
	if path == "" {
		return root
	}
	if f, ok := made[path]; ok {
		return f
	}
	parent := root
	parentPath := ""
	name := path
	if i := strings.LastIndex(path, "/"); i >= 0 {
		parentPath, name = path[:i], path[i+1:]
		parent = folderFor(ctx, root, parentPath, made)
	}
	f, err := parent.CreateFolder(ctx, name)
	if err != nil {
		fail("folder %s: %v", path, err)
	}
	made[path] = f
	return f
}

func setAttributes(ctx context.Context, c *govmomi.Client, ref types.ManagedObjectReference, attrs map[string]string,
	keys map[string]int32) {
	m, err := object.GetCustomFieldsManager(c.Client)
	if err != nil {
		fail("no custom fields manager: %v", err)
	}
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		key, ok := keys[name]
		if !ok {
			def, err := m.Add(ctx, name, "VirtualMachine", nil, nil)
			if err != nil {
				fail("custom attribute %s: %v", name, err)
			}
			key = def.Key
			keys[name] = key
		}
		if err := m.Set(ctx, ref, key, attrs[name]); err != nil {
			fail("custom attribute %s: %v", name, err)
		}
	}
}

func populate(ctx context.Context, u *url.URL, e estate) {
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		fail("cannot log in to the simulator: %v", err)
	}
	defer func() { _ = c.Logout(ctx) }()
	finder := find.NewFinder(c.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		fail("no datacenter: %v", err)
	}
	finder.SetDatacenter(dc)
	hosts, err := finder.HostSystemList(ctx, "*")
	if err != nil || len(hosts) != len(e.Hosts) {
		fail("expected %d hosts: %v", len(e.Hosts), err)
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Reference().Value < hosts[j].Reference().Value })
	byName := map[string]*object.HostSystem{}
	for i, name := range e.Hosts {
		rename(hosts[i].Reference(), name)
		byName[name] = object.NewHostSystem(c.Client, hosts[i].Reference())
		if address, ok := e.HostAddrs[name]; ok {
			setHostAddress(hosts[i].Reference(), address)
		}
	}
	stores, err := finder.DatastoreList(ctx, "*")
	if err != nil || len(stores) != len(e.Datastores) {
		fail("expected %d datastores: %v", len(e.Datastores), err)
	}
	sort.Slice(stores, func(i, j int) bool { return stores[i].Reference().Value < stores[j].Reference().Value })
	for i, name := range e.Datastores {
		rename(stores[i].Reference(), name)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		fail("no folders: %v", err)
	}
	made := map[string]*object.Folder{}
	keys := map[string]int32{}
	for _, spec := range e.VMs {
		host, ok := byName[spec.Host]
		if !ok {
			fail("VM %s: unknown host %q", spec.Name, spec.Host)
		}
		ds := spec.Datastore
		if ds == "" {
			ds = e.Datastores[0]
		}
		pool, err := host.ResourcePool(ctx)
		if err != nil {
			fail("host %s: no resource pool: %v", spec.Host, err)
		}
		guestID := spec.GuestID
		if guestID == "" {
			guestID = string(types.VirtualMachineGuestOsIdentifierOtherGuest64)
		}
		config := types.VirtualMachineConfigSpec{
			Name:    spec.Name,
			GuestId: guestID,
			Files:   &types.VirtualMachineFileInfo{VmPathName: "[" + ds + "]"},
		}
		task, err := folderFor(ctx, folders.VmFolder, spec.Folder, made).CreateVM(ctx, config, pool, host)
		if err != nil {
			fail("VM %s: %v", spec.Name, err)
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			fail("VM %s: %v", spec.Name, err)
		}
		ref := info.Result.(types.ManagedObjectReference)
		setTools(ref, spec.Tools)
		if spec.PoweredOn == nil || *spec.PoweredOn {
			vm := object.NewVirtualMachine(c.Client, ref)
			task, err := vm.PowerOn(ctx)
			if err == nil {
				err = task.Wait(ctx)
			}
			if err != nil {
				fail("VM %s: power on: %v", spec.Name, err)
			}
		}
		setGuest(ref, spec.Family, spec.IPs)
		if len(spec.Attrs) > 0 {
			setAttributes(ctx, c, ref, spec.Attrs, keys)
		}
	}
}

func main() {
	estatePath := flag.String("estate", "", "JSON estate description (hosts, datastores, vms)")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	username := flag.String("username", "", "the only user allowed to log in (default: any non-empty)")
	passwordEnv := flag.String("password-env", "", "environment variable holding that user's password")
	certFile := flag.String("tls-cert", "", "PEM certificate: serve HTTPS with it")
	keyFile := flag.String("tls-key", "", "PEM private key of -tls-cert")
	flag.Parse()
	if *estatePath == "" {
		fail("-estate is required")
	}
	e := readEstate(*estatePath)

	model := simulator.VPX()
	model.Datacenter = 1
	model.Cluster = 0
	model.ClusterHost = 0
	model.Pool = 0
	model.Host = len(e.Hosts)
	model.Datastore = len(e.Datastores)
	model.Machine = 0
	model.Autostart = false
	if err := model.Create(); err != nil {
		fail("cannot create the model: %v", err)
	}
	defer model.Remove()

	login := url.UserPassword("user", "pass")
	if *username != "" {
		password := os.Getenv(*passwordEnv)
		if *passwordEnv == "" || password == "" {
			fail("-username needs -password-env naming a set environment variable")
		}
		login = url.UserPassword(*username, password)
	}
	model.Service.Listen = &url.URL{Host: *listen, User: login}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail("cannot load the TLS certificate: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	server := model.Service.NewServer()
	defer server.Close()

	ctx := context.Background()
	populate(ctx, server.URL, e)

	public := *server.URL
	public.User = nil
	out, _ := json.Marshal(map[string]interface{}{"url": public.String(), "vms": len(e.VMs), "hosts": len(e.Hosts)})
	fmt.Println(string(out))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
}
