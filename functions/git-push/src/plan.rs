//! What a delivery would do, computed without I/O: its pushes and the routing table in, the
//! runs to create (built, named and annotated) and the rules ignored, with why, out.
//!
//! The webhook and CloudEvent handlers apply a plan (`apply`; a dry run asks the API
//! server to check each run without creating it), and `tekflux render` shows it as it is
//! ([`Plan::summary`]). Nothing here reads the network, the clock or the process.

use tekflux_common::commit_status::StatusReporter;
use tekflux_common::config::Config;
use tekflux_common::run_contract::{RunKind, STATUS_CONTEXT_ANNOTATION};

use crate::error::DeliveryError;
use crate::path_capture::Captures;
use crate::push::{Push, ZERO_SHA};
use crate::routing::{Miss, RoutingTable};
use crate::rule::{CompiledRule, Target};
use crate::run::{self, RunContext, RunObject};
use crate::summary::{IgnoredRule, PushSummary, RunSummary, Summary};

/// What planning reads: the compiled rules, the config they came from (for commit-status
/// settings per rule), which providers report commit statuses, and the run builder's context.
#[derive(Debug, Clone, Copy)]
pub struct Planner<'a> {
    /// The compiled `repositories` rules.
    pub routing: &'a RoutingTable,
    /// The config the rules were compiled from.
    pub config: &'a Config,
    /// Which providers report commit statuses, and how (only its settings are read).
    pub status: &'a StatusReporter,
    /// Namespace and version for the runs.
    pub context: &'a RunContext,
}

/// The runs a delivery starts and the rules it leaves alone, push by push.
#[derive(Debug)]
pub struct Plan<'a> {
    /// One entry per push of the delivery, in the order the provider listed them.
    pub pushes: Vec<PushPlan<'a>>,
}

/// What one push starts.
#[derive(Debug)]
pub struct PushPlan<'a> {
    /// The push.
    pub push: &'a Push,
    /// The runs to create, in rule order (a fan-out rule's one per captured value).
    pub runs: Vec<PlannedRun<'a>>,
    /// Rules for the push's repository that did not match.
    pub ignored: Vec<Ignored<'a>>,
    /// How many rules are for other repositories.
    pub other_repository_rules: usize,
    /// No rule at all is for the push's repository.
    pub no_rule: bool,
}

/// One run to create.
#[derive(Debug)]
pub struct PlannedRun<'a> {
    /// The rule that matched.
    pub rule: &'a CompiledRule,
    /// `PipelineRun` or `TaskRun`.
    pub kind: RunKind,
    /// Why the rule matched.
    pub reason: String,
    /// For a fan-out rule, the values captured for this run; empty otherwise.
    pub captures: Captures,
    /// The commit-status context the run reports under, when its rule reports.
    pub status_context: Option<String>,
    /// The object to create.
    pub object: RunObject,
}

/// A rule for the push's repository that did not match.
#[derive(Debug)]
pub struct Ignored<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// Why not, for the answer.
    pub reason: String,
    /// Why not, for the `ignored` counter.
    pub miss: Miss,
}

impl<'a> Planner<'a> {
    /// Routes every push and builds one run per matched rule (or per fan-out value).
    ///
    /// A run that cannot be built fails the whole plan, before anything is created.
    pub fn plan(&self, pushes: &'a [Push]) -> Result<Plan<'a>, DeliveryError> {
        let pushes = pushes
            .iter()
            .map(|push| self.plan_push(push))
            .collect::<Result<_, _>>()?;
        Ok(Plan { pushes })
    }

    fn plan_push(&self, push: &'a Push) -> Result<PushPlan<'a>, DeliveryError> {
        let routing = self.routing.route(push);
        let mut plan = PushPlan {
            push,
            runs: Vec::new(),
            ignored: Vec::new(),
            other_repository_rules: routing.other_repository_rules,
            no_rule: routing.decisions.is_empty(),
        };
        for decision in routing.decisions {
            if !decision.matched {
                plan.ignored.push(Ignored {
                    rule: decision.name,
                    reason: decision.reason,
                    miss: decision.miss.unwrap_or(Miss::NotSelected),
                });
                continue;
            }
            let rule = decision.rule;
            // One run, or one per value a fan-out rule captured.
            let instances = if decision.fan_out.is_empty() {
                vec![Captures::new()]
            } else {
                decision.fan_out
            };
            let status_context = self.status_context(push, rule.index);
            for captures in instances {
                plan.runs.push(planned_run(
                    rule,
                    push,
                    captures,
                    status_context.as_deref(),
                    &decision.reason,
                    self.context,
                )?);
            }
        }
        Ok(plan)
    }

    /// The status context of `push`'s runs of the rule at `index`, when that rule reports.
    fn status_context(&self, push: &Push, index: usize) -> Option<String> {
        let rule = self.config.repositories.get(index)?;
        let settings = self.status.settings(push.provider);
        (rule.reports_status(settings) && push.after != ZERO_SHA)
            .then(|| rule.status_context(settings))
    }
}

fn planned_run<'a>(
    rule: &'a CompiledRule,
    push: &Push,
    captures: Captures,
    status_context: Option<&str>,
    reason: &str,
    context: &RunContext,
) -> Result<PlannedRun<'a>, DeliveryError> {
    let mut object = run::build_fan_out_run(rule, push, &captures, context).map_err(|error| {
        DeliveryError::Build {
            rule: rule.name.clone(),
            error,
        }
    })?;
    // A fan-out rule's runs of one commit each get their own context (`tekflux/build/api-a`),
    // or they would overwrite each other's status.
    let status_context = status_context.map(|context| {
        std::iter::once(context)
            .chain(captures.values().map(String::as_str))
            .collect::<Vec<_>>()
            .join("/")
    });
    if let Some(context) = &status_context {
        // run-complete reports the outcome under the same context, read from here.
        object
            .metadata
            .annotations
            .insert(STATUS_CONTEXT_ANNOTATION, context.clone());
    }
    Ok(PlannedRun {
        rule,
        kind: rule.run_kind(),
        reason: reason.to_owned(),
        captures,
        status_context,
        object,
    })
}

impl Plan<'_> {
    /// The plan as a dry run without a cluster answers it: every run with the object that would
    /// be created.
    pub fn summary(self) -> Summary {
        let mut summary = Summary {
            dry_run: true,
            ..Summary::default()
        };
        for push in self.pushes {
            push.summarise_into(&mut summary);
            for run in push.runs {
                let mut run_summary = run.summary();
                run_summary.object = Some(run.object.to_json());
                summary.runs.push(run_summary);
            }
        }
        summary
    }
}

impl PushPlan<'_> {
    /// Adds the push and its ignored rules to `summary` (not its runs).
    pub fn summarise_into(&self, summary: &mut Summary) {
        let push = self.push;
        summary.pushes.push(PushSummary {
            repository: push.repo_url.clone(),
            git_ref: push.git_ref.clone(),
            sha: push.after.clone(),
            delivery: push.delivery_id.clone(),
            paths_complete: push.paths_complete,
        });
        summary.other_repository_rules += self.other_repository_rules;
        summary
            .ignored
            .extend(self.ignored.iter().map(|ignored| IgnoredRule {
                rule: ignored.rule.to_owned(),
                git_ref: push.git_ref.clone(),
                reason: ignored.reason.clone(),
            }));
    }
}

impl PlannedRun<'_> {
    /// Namespace of the run (its object's).
    pub fn namespace(&self) -> &str {
        &self.object.metadata.namespace
    }

    /// Name of the run (its object's).
    pub fn name(&self) -> &str {
        &self.object.metadata.name
    }

    /// The run's line in the answer, without its object and with nothing superseded yet.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            rule: self.rule.name.clone(),
            kind: self.kind.as_str(),
            namespace: self.namespace().to_owned(),
            name: self.name().to_owned(),
            target: match &self.rule.target {
                Target::Pipeline(name) | Target::Task(name) => name.clone(),
            },
            reason: self.reason.clone(),
            superseded: Vec::new(),
            paths: self.captures.clone(),
            object: None,
        }
    }
}
