//! Execution behind one trait: how a run's analysis is executed depends on its module (a
//! component, the R engine, a pipeline, or a component under sample and aggregate), and
//! nothing after the choice does. Every engine returns candidates for the one decision point.

use super::*;

/// One way to execute an admitted run's analysis.
pub(super) trait Engine {
    /// Run over `grants` within `limits`: the outputs, as candidates for the decision point.
    fn run(
        &mut self,
        grants: &Grants,
        limits: &Limits,
        token: &CancelToken,
    ) -> Result<Vec<Candidate>, RunError>;

    /// What the receipt names about how the run went (a pipeline's steps).
    fn receipt_steps(&self) -> Vec<cleanroom_proto::ReceiptStep> {
        Vec::new()
    }
}

/// The engine for `run`'s module.
pub(super) fn choose<'a>(
    service: &'a Service,
    run: &'a RunRow,
    admitted: &'a Admitted,
    collector: &Arc<IdentifierCollector>,
) -> ApiResult<Box<dyn Engine + 'a>> {
    if let Some(row) = service.storage.pipeline(&run.request.module)? {
        let steps = crate::pipelines::EnclaveSteps::new(service, run, admitted, collector.clone())?;
        return Ok(Box::new(Pipeline {
            service,
            run,
            pipeline: row.pipeline,
            steps,
            ran: Vec::new(),
        }));
    }
    if let Some(sa) = run
        .request
        .dp
        .as_ref()
        .and_then(|dp| dp.sample_aggregate.clone())
    {
        return Ok(Box::new(SampleAndAggregate {
            service,
            run,
            admitted,
            sa,
        }));
    }
    if let Some(r) = service
        .r_engine
        .as_ref()
        .filter(|r| r.id() == run.request.module)
    {
        return Ok(Box::new(R { engine: r, run }));
    }
    Ok(Box::new(Component {
        service,
        run,
        module: crate::modules::load(service, &run.request.module)?,
        aggregation: aggregation(admitted),
    }))
}

/// An analysis component, with the host's aggregates under the admitted terms.
struct Component<'a> {
    service: &'a Service,
    run: &'a RunRow,
    module: Arc<cleanroom_runtime::Module>,
    aggregation: Aggregation,
}

impl Engine for Component<'_> {
    fn run(
        &mut self,
        grants: &Grants,
        limits: &Limits,
        token: &CancelToken,
    ) -> Result<Vec<Candidate>, RunError> {
        self.service
            .runtime
            .run_with(
                &self.module,
                grants.clone(),
                &self.run.request.params,
                limits,
                Some(token),
                self.aggregation.clone(),
            )
            .map(cleanroom_runtime::RunOutput::candidates)
    }
}

/// An R script (the run's params) in the R engine (never over a DP table: admission refuses
/// that, at submission and again at start).
struct R<'a> {
    run: &'a RunRow,
    engine: &'a cleanroom_r::REngine,
}

impl Engine for R<'_> {
    fn run(
        &mut self,
        grants: &Grants,
        limits: &Limits,
        token: &CancelToken,
    ) -> Result<Vec<Candidate>, RunError> {
        self.engine
            .run(grants, &self.run.request.params, limits, Some(token))
            .map(cleanroom_runtime::RunOutput::candidates)
    }
}

/// A pipeline: its steps in order, derived tables kept by the enclave, the last step's
/// outputs the run's.
struct Pipeline<'a> {
    service: &'a Service,
    run: &'a RunRow,
    pipeline: cleanroom_proto::pipeline::Pipeline,
    steps: crate::pipelines::EnclaveSteps<'a>,
    /// The steps that ran, once the chain finished.
    ran: Vec<cleanroom_proto::ReceiptStep>,
}

impl Engine for Pipeline<'_> {
    fn run(
        &mut self,
        grants: &Grants,
        limits: &Limits,
        token: &CancelToken,
    ) -> Result<Vec<Candidate>, RunError> {
        let chain = cleanroom_runtime::pipeline::run_chain(
            &self.service.runtime,
            &self.pipeline,
            grants,
            limits,
            Some(token),
            &mut self.steps,
        );
        match chain {
            Ok(out) => {
                self.ran = self.steps.receipt_steps(&self.pipeline, &out.steps);
                Ok(out.finals)
            }
            Err(failed) => {
                tracing::info!(
                    run = self.run.id,
                    step = failed.step,
                    "a pipeline step failed"
                );
                Err(failed.error)
            }
        }
    }

    fn receipt_steps(&self) -> Vec<cleanroom_proto::ReceiptStep> {
        self.ran.clone()
    }
}

/// A component run on disjoint blocks of the rows, its answers combined with noise.
struct SampleAndAggregate<'a> {
    service: &'a Service,
    run: &'a RunRow,
    admitted: &'a Admitted,
    sa: SampleAggregate,
}

impl Engine for SampleAndAggregate<'_> {
    fn run(
        &mut self,
        grants: &Grants,
        limits: &Limits,
        token: &CancelToken,
    ) -> Result<Vec<Candidate>, RunError> {
        sample_aggregate(
            self.service,
            self.run,
            self.admitted,
            grants,
            limits,
            token,
            &self.sa,
        )
    }
}

/// Run a sample-and-aggregate analysis and release its noisy vector as a checked table.
fn sample_aggregate(
    service: &Service,
    run: &RunRow,
    admitted: &Admitted,
    grants: &Grants,
    limits: &Limits,
    token: &CancelToken,
    sa: &SampleAggregate,
) -> Result<Vec<Candidate>, RunError> {
    let mut key = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
    let units = admitted
        .inputs
        .iter()
        .filter_map(|i| Some((i.receipt.name.clone(), i.dp.as_ref()?.unit_column.clone())))
        .collect();
    let plan = BlockPlan {
        blocks: sa.blocks,
        key,
        units,
        output: sa.output.clone(),
        dimensions: sa.bounds.len(),
    };
    let module = crate::modules::load(service, &run.request.module)
        .map_err(|e| RunError::Internal(e.to_string()))?;
    let blocks = service.runtime.run_blocks(
        &module,
        grants,
        &run.request.params,
        limits,
        Some(token),
        &plan,
    )?;
    let bounds: Vec<(f64, f64)> = sa.bounds.iter().map(|(l, h)| (l.get(), h.get())).collect();
    let epsilon = admitted.epsilon.unwrap_or_default();
    let values = cleanroom_policy::dp::sample_aggregate_release(&blocks, &bounds, epsilon)
        .map_err(|e| RunError::Internal(e.to_string()))?;
    let batch = sample_aggregate_table(&values, epsilon, sa.blocks)
        .map_err(|e| RunError::Internal(e.to_string()))?;
    Ok(vec![Candidate {
        name: sa.output.clone(),
        kind: cleanroom_proto::run::OutputKind::Table,
        content: Content::Checked {
            schema: batch.schema(),
            batches: vec![batch],
            codes: vec![Code::DpNoised],
            refused: false,
            private: true,
        },
    }])
}

/// The released vector: one row per coordinate.
pub(super) fn sample_aggregate_table(
    values: &[f64],
    epsilon: cleanroom_proto::dp::Epsilon,
    blocks: u32,
) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
    use arrow_array::{ArrayRef, Float64Array, Int64Array};
    let schema = arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("coordinate", arrow_schema::DataType::Int64, false),
        arrow_schema::Field::new("value", arrow_schema::DataType::Float64, false),
    ])
    .with_metadata(
        [
            (
                "cleanroom:aggregate".to_string(),
                "sample_aggregate".to_string(),
            ),
            ("cleanroom:epsilon".to_string(), epsilon.to_string()),
            ("cleanroom:blocks".to_string(), blocks.to_string()),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<String, String>>(),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..values.len() as i64)),
        Arc::new(Float64Array::from(values.to_vec())),
    ];
    arrow_array::RecordBatch::try_new(Arc::new(schema), columns)
}
