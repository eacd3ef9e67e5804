<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.16-Białowieża" styleCategories="AllStyleCategories" labelsEnabled="0" readOnly="0" hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0" simplifyDrawingHints="1" simplifyDrawingTol="1" simplifyLocal="1" simplifyAlgorithm="0" simplifyMaxScale="1">
 <renderer-v2 type="categorizedSymbol" attr="status" symbollevels="0" forceraster="0" enableorderby="0">
  <categories>
   <category render="true" symbol="0" value="processed" label="判読済み"/>
   <category render="true" symbol="1" value="nodata" label="画像なし（未判読）"/>
   <category render="true" symbol="2" value="skipped" label="対象外（未判読）"/>
   <category render="true" symbol="3" value="" label="その他"/>
  </categories>
  <symbols>
   <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="0,0,0,0"/>
      <Option name="outline_color" type="QString" value="31,120,180,255"/>
      <Option name="outline_style" type="QString" value="dash"/>
      <Option name="outline_width" type="QString" value="0.4"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="0,0,0,0"/>
     <prop k="outline_color" v="31,120,180,255"/>
     <prop k="outline_style" v="dash"/>
     <prop k="outline_width" v="0.4"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="1" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="120,120,120,110"/>
      <Option name="outline_color" type="QString" value="80,80,80,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.3"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="b_diagonal"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="120,120,120,110"/>
     <prop k="outline_color" v="80,80,80,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.3"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="b_diagonal"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="2" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="120,120,120,110"/>
      <Option name="outline_color" type="QString" value="80,80,80,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.3"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="b_diagonal"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="120,120,120,110"/>
     <prop k="outline_color" v="80,80,80,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.3"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="b_diagonal"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="3" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="120,120,120,60"/>
      <Option name="outline_color" type="QString" value="80,80,80,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.3"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="120,120,120,60"/>
     <prop k="outline_color" v="80,80,80,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.3"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
  </symbols>
  <source-symbol>
   <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="120,120,120,60"/>
      <Option name="outline_color" type="QString" value="80,80,80,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.3"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="120,120,120,60"/>
     <prop k="outline_color" v="80,80,80,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.3"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
  </source-symbol>
  <rotation/>
  <sizescale/>
 </renderer-v2>
 <fieldConfiguration/>
 <aliases>
  <alias field="status" name="処理状況"/>
 </aliases>
 <defaults/>
 <editable>
  <field name="status" editable="0"/>
 </editable>
 <previewExpression/>
 <layerGeometryType>2</layerGeometryType>
</qgis>
