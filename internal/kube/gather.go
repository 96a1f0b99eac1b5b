package kube

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// instanceLabel is the label whose value names the container a series
// belongs to (see export.ServiceLabels).
const instanceLabel = "service_instance_id"

// Gatherer wraps g so that every series of an instrumented container
// (every series with its service_instance_id) also carries the
// container's Kubernetes labels (SeriesLabels; those without a value, e.g.
// k8s_deployment_name of a StatefulSet's pod, are left out). Series of
// obsd itself are unchanged: Prometheus's own service discovery labels
// them with obsd's pod.
func (s *Source) Gatherer(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		s.mu.RLock()
		defer s.mu.RUnlock()
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				var id *identity
				for _, lp := range m.Label {
					if lp.GetName() == instanceLabel {
						id = s.ident[lp.GetValue()]
						break
					}
				}
				if id == nil {
					continue
				}
				for _, l := range id.labels {
					m.Label = append(m.Label, &dto.LabelPair{Name: &l.name, Value: &l.value})
				}
				sort.Slice(m.Label, func(i, j int) bool { return m.Label[i].GetName() < m.Label[j].GetName() })
			}
		}
		return mfs, err
	})
}
